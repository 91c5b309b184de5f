package proxy

import (
	"testing"

	"github.com/meshctl/mesh/internal/proxy/config"
)

func TestPickPrefersFewerInFlightPerWeight(t *testing.T) {
	a := &config.EndpointState{Weight: 1}
	b := &config.EndpointState{Weight: 1}
	a.Active.Store(5)
	eps := []*config.EndpointState{a, b}
	// The draws return 0 then 1: a and b are compared.
	seq := []int{0, 1}
	rnd := func(n int) int { v := seq[0] % n; seq = seq[1:]; return v }
	if got := pick(eps, rnd); got != b {
		t.Errorf("picked the busier endpoint")
	}
	// Weight 10 with 5 in flight beats weight 1 with 1 in flight.
	a.Weight = 10
	b.Active.Store(1)
	seq = []int{0, 10}
	if got := pick(eps, rnd); got != a {
		t.Errorf("weight not taken into account")
	}
}

func TestPickEmptyAndSingle(t *testing.T) {
	if pick(nil, nil) != nil {
		t.Error("picked from nothing")
	}
	e := &config.EndpointState{Weight: 1}
	if pick([]*config.EndpointState{e}, nil) != e {
		t.Error("single endpoint not picked")
	}
}
