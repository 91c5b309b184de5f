package upstream

import (
	"net/netip"
	"testing"
)

func weighted(addr string, w int) Weighted {
	return Weighted{Endpoint: NewEndpoint(Key{Addr: netip.MustParseAddrPort(addr)}), Weight: w}
}

// seq returns a random source that yields vs in turn.
func seq(vs ...int) func(int) int {
	return func(n int) int { v := vs[0] % n; vs = vs[1:]; return v }
}

func TestPickPrefersFewerInFlightPerWeight(t *testing.T) {
	eps := []Weighted{weighted("10.0.0.1:80", 1), weighted("10.0.0.2:80", 1)}
	for range 5 {
		eps[0].Acquire()
	}
	// The draws return 0 then 1: both endpoints are compared.
	if got := (P2C{Rand: seq(0, 1)}).Pick(eps); got != &eps[1] {
		t.Errorf("picked the busier endpoint")
	}
	// Weight 10 with 5 in flight beats weight 1 with 1 in flight.
	eps[0].Weight = 10
	eps[1].Acquire()
	if got := (P2C{Rand: seq(0, 10)}).Pick(eps); got != &eps[0] {
		t.Errorf("weight not taken into account")
	}
}

func TestPickEmptyAndSingle(t *testing.T) {
	if (P2C{}).Pick(nil) != nil {
		t.Error("picked from nothing")
	}
	eps := []Weighted{weighted("10.0.0.1:80", 1)}
	if (P2C{}).Pick(eps) != &eps[0] {
		t.Error("single endpoint not picked")
	}
}

// Entries are shared by every table that names them, keep their state
// across generations, and go when no table in force names them.
func TestRegistrySharesAndSweeps(t *testing.T) {
	r := NewRegistry()
	a := Key{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Identity: "spiffe://td/a"}
	b := Key{Addr: netip.MustParseAddrPort("10.0.0.2:80")}
	g1 := r.Begin()
	ea := r.Endpoint(a, g1)
	r.Endpoint(b, g1)
	ea.Acquire()
	if r.Sweep(g1) != 0 {
		t.Fatal("swept entries of the table in force")
	}
	g2 := r.Begin()
	if r.Endpoint(a, g2) != ea || ea.InFlight() != 1 {
		t.Fatal("a new table did not get the live entry")
	}
	// Same address, another identity: another endpoint.
	if r.Endpoint(Key{Addr: a.Addr, Identity: "spiffe://td/other"}, g2) == ea {
		t.Fatal("identity not part of the key")
	}
	if n := r.Sweep(g2); n != 1 || r.Lookup(b) != nil {
		t.Fatalf("swept %d, b still there: %v", n, r.Lookup(b) != nil)
	}
	if len(r.Endpoints()) != 2 {
		t.Errorf("entries %v", r.Endpoints())
	}
	// A request that started under the old table still releases.
	ea.Release()
	if r.Lookup(a).InFlight() != 0 {
		t.Error("in-flight count lost")
	}
}
