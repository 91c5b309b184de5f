package config

import (
	"net/netip"
	"sort"
	"sync/atomic"
	"time"
)

// Snapshot is a validated configuration indexed for the data path. It is
// immutable once built except for the per-endpoint in-flight counters, which
// the balancer owns.
type Snapshot struct {
	// Config is the validated configuration with defaults applied.
	Config Config
	// Source is where it was loaded from.
	Source string
	// LoadedAt is when the snapshot was built.
	LoadedAt time.Time

	targets      map[netip.AddrPort]*Target
	inOpaque     map[uint16]bool
	outOpaque    map[uint16]bool
	serviceOrder []*Target
}

// Target is one port of one service: what an outbound connection to a
// virtual address and port resolves to.
type Target struct {
	// Label names the service in metrics and logs: "name.namespace".
	Label     string
	Name      string
	Namespace string
	Port      ServicePort
	// Endpoints are dialed on Port.TargetPort. Endpoints of weight 0 are
	// left out.
	Endpoints []*EndpointState
}

// EndpointState is an endpoint of one target with its balancing state.
type EndpointState struct {
	Addr netip.AddrPort
	// AddrString is Addr as the dialer wants it, formatted once.
	AddrString string
	Identity   string
	Weight     int
	// Active counts requests and connections in flight to this endpoint.
	Active atomic.Int64
}

func newSnapshot(c Config, source string) (*Snapshot, error) {
	s := &Snapshot{
		Config:    c,
		Source:    source,
		LoadedAt:  time.Now(),
		targets:   map[netip.AddrPort]*Target{},
		inOpaque:  portSet(c.Inbound.OpaquePorts),
		outOpaque: portSet(c.Outbound.OpaquePorts),
	}
	for _, svc := range c.Services {
		for _, p := range svc.Ports {
			t := &Target{
				Label:     svc.Name + "." + svc.Namespace,
				Name:      svc.Name,
				Namespace: svc.Namespace,
				Port:      p,
			}
			for _, e := range svc.Endpoints {
				if *e.Weight == 0 {
					continue
				}
				ip := netip.MustParseAddr(e.Address).Unmap()
				ap := netip.AddrPortFrom(ip, uint16(p.TargetPort))
				t.Endpoints = append(t.Endpoints, &EndpointState{
					Addr:       ap,
					AddrString: ap.String(),
					Identity:   e.Identity,
					Weight:     *e.Weight,
				})
			}
			s.serviceOrder = append(s.serviceOrder, t)
			for _, a := range svc.Addresses {
				ip := netip.MustParseAddr(a).Unmap()
				s.targets[netip.AddrPortFrom(ip, uint16(p.Port))] = t
			}
		}
	}
	sort.SliceStable(s.serviceOrder, func(i, j int) bool {
		a, b := s.serviceOrder[i], s.serviceOrder[j]
		if a.Label != b.Label {
			return a.Label < b.Label
		}
		return a.Port.Port < b.Port.Port
	})
	return s, nil
}

func portSet(ports []int) map[uint16]bool {
	m := make(map[uint16]bool, len(ports))
	for _, p := range ports {
		m[uint16(p)] = true
	}
	return m
}

// Version is the configuration's version string.
func (s *Snapshot) Version() string { return s.Config.Version }

// Target returns the service port behind a virtual address, or nil when the
// address belongs to no known service.
func (s *Snapshot) Target(dst netip.AddrPort) *Target {
	return s.targets[netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())]
}

// Targets returns every service port, ordered by service and port.
func (s *Snapshot) Targets() []*Target { return s.serviceOrder }

// InboundOpaque reports whether an application port skips detection.
func (s *Snapshot) InboundOpaque(port uint16) bool { return s.inOpaque[port] }

// OutboundOpaque reports whether a destination port skips detection.
func (s *Snapshot) OutboundOpaque(port uint16) bool { return s.outOpaque[port] }

// Store holds the snapshot in force. Readers never block and always see a
// whole snapshot; a reload builds a new one and swaps it in, and connections
// that started under the old one keep it.
type Store struct {
	p        atomic.Pointer[Snapshot]
	reloaded atomic.Uint64
	failed   atomic.Uint64
}

// Reload loads the file at path and swaps it in if it is valid; an invalid
// file leaves the snapshot in force untouched.
func (st *Store) Reload(path string) (*Snapshot, error) {
	s, err := Load(path)
	if err != nil {
		st.failed.Add(1)
		return nil, err
	}
	st.Swap(s)
	st.reloaded.Add(1)
	return s, nil
}

// Reloads counts the reloads that succeeded and failed.
func (st *Store) Reloads() (ok, failed uint64) {
	return st.reloaded.Load(), st.failed.Load()
}

// Load returns the snapshot in force, or nil before the first Swap.
func (st *Store) Load() *Snapshot { return st.p.Load() }

// Swap puts s in force and returns the previous snapshot.
func (st *Store) Swap(s *Snapshot) *Snapshot { return st.p.Swap(s) }
