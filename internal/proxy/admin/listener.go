package admin

import (
	"net"
	"sync"
	"sync/atomic"
)

// MaxConnections bounds the admin API's open connections. The admin port is
// reachable from the pod network (the kubelet's probes, Prometheus), so
// without a bound a neighbour could hold thousands of keep-alive
// connections and exhaust the pod's file descriptors and memory. The
// kubelet and a scraper need a handful.
const MaxConnections = 64

// Listener accepts at most max connections at a time; one past it is
// closed at once and counted, so that a flood costs the proxy nothing but
// the accept (a blocking limit would leave the kubelet's probes queued
// behind the flood).
type Listener struct {
	net.Listener
	max     int
	open    atomic.Int64
	refused atomic.Uint64
}

// NewListener bounds ln to max open connections (MaxConnections when max
// <= 0).
func NewListener(ln net.Listener, max int) *Listener {
	if max <= 0 {
		max = MaxConnections
	}
	return &Listener{Listener: ln, max: max}
}

// Accept returns the next connection under the bound.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > int64(l.max) {
			l.open.Add(-1)
			l.refused.Add(1)
			c.Close()
			continue
		}
		return &boundedConn{Conn: c, l: l}, nil
	}
}

// Refused counts the connections closed for being over the bound.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

type boundedConn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *boundedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}
