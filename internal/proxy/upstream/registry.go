// Package upstream owns what the proxy knows about the endpoints it
// forwards to, beyond any one configuration: the live state of each
// endpoint (requests in flight now; latency, ejection and circuit-breaker
// state later), the balancer that chooses among them, and the one dial
// path every forwarder connects through.
//
// The routing table (package config) is rebuilt on every push and swapped
// in whole; the state here is not part of it, so that a push that only
// changes a weight or adds an endpoint keeps every other endpoint's counts.
// A table refers to Endpoint entries of a Registry, and an entry lives as
// long as a table in force names it.
package upstream

import (
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
)

// Key names an endpoint: its address and port, and the identity it must
// present. An address that comes back with another identity (a pod IP
// reused by another workload) is another endpoint.
type Key struct {
	Addr     netip.AddrPort
	Identity string
}

// Endpoint is the live state of one endpoint, shared by every table that
// names it. Its methods are safe for concurrent use.
type Endpoint struct {
	key Key
	// addr is key.Addr as the dialer wants it, formatted once.
	addr string
	// inFlight counts requests and connections in flight to the endpoint.
	inFlight atomic.Int64
	// gen is the newest table generation that names the endpoint (under
	// the registry's lock).
	gen uint64
}

// NewEndpoint returns state that belongs to no registry, for tests and
// one-off tables.
func NewEndpoint(k Key) *Endpoint {
	return &Endpoint{key: k, addr: k.Addr.String()}
}

// Key returns the endpoint's key.
func (e *Endpoint) Key() Key { return e.key }

// Address returns the endpoint's address as "ip:port" (formatted once).
func (e *Endpoint) Address() string { return e.addr }

// InFlight returns the requests and connections in flight to the endpoint.
func (e *Endpoint) InFlight() int64 { return e.inFlight.Load() }

// Acquire counts one more request or connection in flight; the caller
// must Release it when the request or connection ends.
func (e *Endpoint) Acquire() { e.inFlight.Add(1) }

// Release ends what Acquire counted.
func (e *Endpoint) Release() { e.inFlight.Add(-1) }

// Registry holds the live state of every endpoint that a table names. A
// table is compiled in a generation (Begin), names its endpoints through
// Endpoint, and once it is in force Sweep drops the entries that no
// table of that generation or later names. The zero value is not ready;
// use NewRegistry.
type Registry struct {
	mu  sync.Mutex
	eps map[Key]*Endpoint
	gen uint64
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{eps: map[Key]*Endpoint{}} }

// Begin starts the generation of a new table and returns it.
func (r *Registry) Begin() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	return r.gen
}

// Endpoint returns the entry of k, creating it on first use, and marks it
// named by generation gen.
func (r *Registry) Endpoint(k Key, gen uint64) *Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.eps[k]
	if e == nil {
		e = NewEndpoint(k)
		r.eps[k] = e
	}
	e.gen = max(e.gen, gen)
	return e
}

// Sweep drops the entries that no table of generation gen or later names;
// it is called when the table of generation gen is put in force. A table
// still in use by requests that started before keeps its entries (they are
// only forgotten by the registry), so their counts still come down. It
// returns how many entries were dropped.
func (r *Registry) Sweep(gen uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, e := range r.eps {
		if e.gen < gen {
			delete(r.eps, k)
			n++
		}
	}
	return n
}

// Lookup returns the entry of k, or nil.
func (r *Registry) Lookup(k Key) *Endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.eps[k]
}

// Endpoints returns every entry, ordered by address and identity.
func (r *Registry) Endpoints() []*Endpoint {
	r.mu.Lock()
	out := make([]*Endpoint, 0, len(r.eps))
	for _, e := range r.eps {
		out = append(out, e)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].key, out[j].key
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c < 0
		}
		return a.Identity < b.Identity
	})
	return out
}
