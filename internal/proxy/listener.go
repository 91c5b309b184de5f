package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// listenConfig binds with SO_REUSEPORT so that a new proxy process can bind
// the same ports while the old one drains: a restart never has a moment in
// which connections are refused.
var listenConfig = net.ListenConfig{
	Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	},
}

// Listen binds a TCP address with SO_REUSEPORT.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	return listenConfig.Listen(ctx, "tcp", addr)
}

// listener is one of the proxy's data listeners.
type listener struct {
	name   string
	dir    metrics.Direction
	ln     net.Listener
	port   uint16
	active atomic.Int64
	// fdRefused counts connections closed at once because the listener's
	// descriptor budget was spent.
	fdRefused atomic.Uint64
}

func newListener(name string, dir metrics.Direction, ln net.Listener) *listener {
	ap, _ := netip.ParseAddrPort(ln.Addr().String())
	return &listener{name: name, dir: dir, ln: ln, port: ap.Port()}
}

// acceptLoop accepts until the listener closes, handing each connection to
// handle in its own goroutine. Connections beyond maxConnections, or beyond
// what the listener's descriptor budget holds, are closed at once: refusing
// is cheaper for everyone than accepting work that cannot be done, and the
// other listener keeps its own budget.
func (p *Proxy) acceptLoop(l *listener) {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait and retry rather
			// than spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accepting connection", "listener", l.name, "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		// The listener's limits are read once per connection; where its
		// requests go is not (see session.route).
		limits := p.cfg.Load().Config.Limits
		if l.active.Load() >= int64(limits.MaxConnections) {
			p.metrics.Series(l.dir, metrics.Unknown).Error(metrics.ReasonConnLimit)
			c.Close()
			continue
		}
		if (l.active.Load()+1)*fdsPerConn > p.fdBudget(limits.FDBudget) {
			l.fdRefused.Add(1)
			p.metrics.Series(l.dir, metrics.Unknown).Error(metrics.ReasonConnLimit)
			c.Close()
			continue
		}
		l.active.Add(1)
		p.conns.Add(1)
		go func() {
			defer p.conns.Done()
			defer l.active.Add(-1)
			p.handle(l, c, limits)
		}()
	}
}
