package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/proxy/upstream"
)

func TestH1PoolReapsIdleConnections(t *testing.T) {
	pool := newH1Pool(func(context.Context, upstream.Target) (net.Conn, error) {
		c, _ := net.Pipe()
		return c, nil
	}, 4, time.Minute)
	now := time.Now()
	for _, addr := range []string{"10.0.0.1:80", "10.0.0.1:80", "10.0.0.2:80"} {
		uc, _, _ := pool.get(context.Background(), upstream.Target{Addr: addr})
		pool.put(uc)
	}
	// put stamps with the real clock; age one connection by hand.
	pool.mu.Lock()
	pool.idle[poolKey{addr: "10.0.0.2:80"}][0].idleSince = now.Add(-2 * time.Minute)
	pool.mu.Unlock()
	pool.reap(now)
	if n := pool.idleCount(); n != 1 {
		t.Errorf("%d idle connections after reaping, want 1", n)
	}
	if _, ok := pool.idle[poolKey{addr: "10.0.0.2:80"}]; ok {
		t.Error("address without connections kept")
	}
	pool.reap(now.Add(2 * time.Minute))
	if n := pool.idleCount(); n != 0 {
		t.Errorf("%d idle connections left", n)
	}
}
