package config

import (
	"cmp"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// Table is the routing table: the proxy's local settings and a
// meshapi.Set compiled into what the data path reads. It is never changed
// once built; a reload or a push compiles a new one and the Store swaps it
// in whole. The data path loads the table in force for every HTTP request,
// HTTP/2 stream and TCP connection, so a change reaches open connections
// at their next request.
//
// The live state of the endpoints (requests in flight) is not in the
// table but in the upstream.Registry whose entries it names, so that it
// survives the swap.
type Table struct {
	// Config is the local configuration with defaults applied. For a table
	// compiled from a file it also holds the file's services, as written.
	Config Config
	// Set is what the table was compiled from.
	Set *meshapi.Set
	// Source is where it came from: a file path, or "controller".
	Source string
	// LoadedAt is when the table was built.
	LoadedAt time.Time

	reg       *upstream.Registry
	gen       uint64
	targets   map[netip.AddrPort]*Target
	inOpaque  map[uint16]bool
	outOpaque map[uint16]bool
	order     []*Target

	mtls           meshapi.MTLSMode
	mtlsPorts      map[uint16]meshapi.MTLSMode
	identityHeader string

	// inConnect and outConnect are the ports of CONNECT proxies.
	inConnect, outConnect map[uint16]bool
}

// Target is one port of one service: what an outbound connection to a
// virtual address and port resolves to.
type Target struct {
	// Label names the service in metrics and logs: "name.namespace".
	Label     string
	Name      string
	Namespace string
	// Port is the service port (of the virtual address).
	Port     int
	Protocol meshapi.Protocol
	// Endpoints are the endpoints in rotation, each with its own port.
	// Terminating endpoints are here only when no other endpoint serves.
	Endpoints []upstream.Weighted
}

// Opaque reports whether the port skips protocol detection.
func (t *Target) Opaque() bool { return t.Protocol == meshapi.ProtocolOpaque }

// Compile builds a table from the local settings c (a validated
// configuration; its services are ignored) and the services, endpoints
// and mesh settings of set, naming its endpoints in reg. When two
// services claim the same address and port, the first by name wins.
func Compile(c Config, set *meshapi.Set, source string, reg *upstream.Registry) *Table {
	c = c.withDefaults()
	t := &Table{
		Config:    c,
		Set:       set,
		Source:    source,
		LoadedAt:  time.Now(),
		reg:       reg,
		gen:       reg.Begin(),
		targets:   map[netip.AddrPort]*Target{},
		inOpaque:  portSet(c.Inbound.OpaquePorts),
		outOpaque: portSet(c.Outbound.OpaquePorts),
		mtls:      cmp.Or(c.Inbound.MTLS, set.Mesh.InboundMTLS, meshapi.MTLSPermissive),
		mtlsPorts: map[uint16]meshapi.MTLSMode{},
	}
	t.inConnect, t.outConnect = portSet(c.Inbound.ConnectProxyPorts), portSet(c.Outbound.ConnectProxyPorts)
	for _, p := range c.Inbound.StrictMTLSPorts {
		t.mtlsPorts[uint16(p)] = meshapi.MTLSStrict
	}
	for _, p := range c.Inbound.PermissiveMTLSPorts {
		t.mtlsPorts[uint16(p)] = meshapi.MTLSPermissive
	}
	if h := cmp.Or(c.Inbound.ClientIdentityHeader, set.Mesh.PeerIdentityHeader, DefaultClientIdentityHeader); h != "-" {
		t.identityHeader = http.CanonicalHeaderKey(h)
	}
	for _, name := range slices.Sorted(maps.Keys(set.Services)) {
		st := set.Services[name]
		if st.Service == nil {
			continue // endpoints without their service: not routable yet
		}
		for _, p := range st.Service.Ports {
			tg := t.compileTarget(st, p)
			t.order = append(t.order, tg)
			for _, a := range st.Service.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue // validated before; never trust a push blindly
				}
				ap := netip.AddrPortFrom(ip.Unmap(), p.Port)
				if _, taken := t.targets[ap]; !taken {
					t.targets[ap] = tg
				}
			}
		}
	}
	sort.SliceStable(t.order, func(i, j int) bool {
		a, b := t.order[i], t.order[j]
		return cmp.Or(cmp.Compare(a.Label, b.Label), cmp.Compare(a.Port, b.Port)) < 0
	})
	return t
}

func (t *Table) compileTarget(st *meshapi.ServiceState, p meshapi.ServicePort) *Target {
	svc := st.Service
	tg := &Target{
		Label:     svc.Name + "." + svc.Namespace,
		Name:      svc.Name,
		Namespace: svc.Namespace,
		Port:      int(p.Port),
		Protocol:  p.Protocol,
	}
	var serving, terminating []upstream.Weighted
	for _, e := range st.Endpoints {
		port := p.TargetPort
		if port == 0 {
			port = e.Ports[p.Name]
		}
		ip, err := netip.ParseAddr(e.Address)
		if port == 0 || err != nil {
			continue // the endpoint does not serve this port
		}
		k := upstream.Key{Addr: netip.AddrPortFrom(ip.Unmap(), port), Identity: e.Identity}
		w := upstream.Weighted{Endpoint: t.reg.Endpoint(k, t.gen), Weight: max(int(e.Weight), 1), Meshed: e.Meshed}
		if e.Terminating {
			terminating = append(terminating, w)
		} else {
			serving = append(serving, w)
		}
	}
	tg.Endpoints = serving
	if len(serving) == 0 {
		tg.Endpoints = terminating
	}
	return tg
}

func portSet(ports []int) map[uint16]bool {
	m := make(map[uint16]bool, len(ports))
	for _, p := range ports {
		m[uint16(p)] = true
	}
	return m
}

// Version is the configuration's version string.
func (t *Table) Version() string { return t.Config.Version }

// Target returns the service port behind a virtual address, or nil when the
// address belongs to no known service.
func (t *Table) Target(dst netip.AddrPort) *Target {
	return t.targets[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]
}

// Targets returns every service port, ordered by service and port.
func (t *Table) Targets() []*Target { return t.order }

// InboundOpaque reports whether an application port skips detection.
func (t *Table) InboundOpaque(port uint16) bool { return t.inOpaque[port] }

// OutboundOpaque reports whether a destination port skips detection.
func (t *Table) OutboundOpaque(port uint16) bool { return t.outOpaque[port] }

// ConnectProxy reports whether the application port (inbound) or the
// destination port (outbound) is served by an HTTP CONNECT proxy, where a
// CONNECT answered 2xx becomes a tunnel.
func (t *Table) ConnectProxy(inbound bool, port uint16) bool {
	if inbound {
		return t.inConnect[port]
	}
	return t.outConnect[port]
}

// Registry returns the registry of endpoint state the table names.
func (t *Table) Registry() *upstream.Registry { return t.reg }

// Store holds the table in force. Readers never block and always see a
// whole table; a reload or a push compiles a new one and swaps it in.
type Store struct {
	// mu orders the swaps, so that the registry is swept for the table
	// that ends up in force.
	mu       sync.Mutex
	p        atomic.Pointer[Table]
	reloaded atomic.Uint64
	failed   atomic.Uint64
}

// registry is the registry of the table in force, so that every table the
// store holds shares one; a new one before the first table.
func (st *Store) registry() *upstream.Registry {
	if t := st.p.Load(); t != nil {
		return t.reg
	}
	return upstream.NewRegistry()
}

// Reload loads the file at path and swaps it in if it is valid; an invalid
// file leaves the table in force untouched.
func (st *Store) Reload(path string) (*Table, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	t, err := load(path, st.registry())
	if err != nil {
		st.failed.Add(1)
		return nil, err
	}
	st.swapLocked(t)
	st.reloaded.Add(1)
	return t, nil
}

// ReloadPushed reloads the local settings from the file at path and
// compiles them with set, the services the controller pushed, instead of
// the file's: a proxy with a controller keeps its discovered services
// across a reload. An invalid file leaves the table in force untouched.
func (st *Store) ReloadPushed(path string, set *meshapi.Set) (*Table, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	local, err := loadConfig(path)
	if err != nil {
		st.failed.Add(1)
		return nil, err
	}
	local.Services = nil
	t := Compile(local, set, "controller", st.registry())
	st.swapLocked(t)
	st.reloaded.Add(1)
	return t, nil
}

// Push compiles set with the local settings of the table in force and
// swaps the result in. It needs a table in force.
func (st *Store) Push(set *meshapi.Set, source string) *Table {
	st.mu.Lock()
	defer st.mu.Unlock()
	cur := st.p.Load()
	local := cur.Config
	local.Services = nil // the file's, replaced by the set's
	t := Compile(local, set, source, cur.reg)
	st.swapLocked(t)
	return t
}

// Reloads counts the reloads that succeeded and failed.
func (st *Store) Reloads() (ok, failed uint64) {
	return st.reloaded.Load(), st.failed.Load()
}

// Load returns the table in force, or nil before the first Swap.
func (st *Store) Load() *Table { return st.p.Load() }

// Swap puts t in force and returns the previous table. The registry
// forgets the endpoints that no table from t's on names.
func (st *Store) Swap(t *Table) *Table {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.swapLocked(t)
}

func (st *Store) swapLocked(t *Table) *Table {
	old := st.p.Swap(t)
	t.reg.Sweep(t.gen)
	return old
}

// InboundMTLS is the mTLS mode of an application port.
func (t *Table) InboundMTLS(port uint16) meshapi.MTLSMode {
	if m, ok := t.mtlsPorts[port]; ok {
		return m
	}
	return t.mtls
}

// ClientIdentityHeader is the header that carries a meshed client's
// SPIFFE id to the application, in canonical form; "" for none.
func (t *Table) ClientIdentityHeader() string { return t.identityHeader }
