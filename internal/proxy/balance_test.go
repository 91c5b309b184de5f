package proxy

import (
	"context"
	"net"
	"testing"
	"time"

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

func TestH1PoolReapsIdleConnections(t *testing.T) {
	pool := newH1Pool(func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, _ := net.Pipe()
		return c, nil
	}, 4, time.Minute)
	now := time.Now()
	for _, addr := range []string{"10.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80"} {
		uc, _, _ := pool.get(context.Background(), addr)
		pool.put(uc)
	}
	// put stamps with the real clock; age one connection by hand.
	pool.mu.Lock()
	pool.idle["10.0.0.2:80"][0].idleSince = now.Add(-2 * time.Minute)
	pool.mu.Unlock()
	pool.reap(now)
	if n := pool.idleCount(); n != 1 {
		t.Errorf("%d idle connections after reaping, want 1", n)
	}
	if _, ok := pool.idle["10.0.0.2:80"]; ok {
		t.Error("address without connections kept")
	}
	pool.reap(now.Add(2 * time.Minute))
	if n := pool.idleCount(); n != 0 {
		t.Errorf("%d idle connections left", n)
	}
}
