package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// The HTTP/1 upstream side is a pool of persistent connections per endpoint
// address, used by the request's own goroutine: write the request, read the
// response, hand the connection back when the response body ends. It
// replaced http.Transport on this path after profiling: the Transport hands
// every request to two goroutines of its own (write and read loops) and
// back, which cost more than the proxy's own work per request.

// poolKey names the endpoint a pooled connection goes to: its address and
// the identity it presented, so that a connection made to one identity
// never carries a request meant for another at the same address.
type poolKey struct {
	addr, identity string
}

// upstreamConn is one pooled HTTP/1 connection to an endpoint.
type upstreamConn struct {
	net.Conn
	key       poolKey
	in        *h1in
	out       *h1out
	idleSince time.Time

	// For fitForReuse, made once per connection so that the check
	// allocates nothing: raw is nil when the connection is not TCP.
	raw    syscall.RawConn
	peekFn func(fd uintptr) bool
	unfit  bool
	peeked [1]byte
}

func newUpstreamConn(c net.Conn, key poolKey) *upstreamConn {
	uc := &upstreamConn{Conn: c, key: key, in: newH1In(c), out: newH1Out(c, 0)}
	if tc, ok := tcpConn(c); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			uc.raw = raw
			uc.peekFn = uc.peek
		}
	}
	return uc
}

// fitForReuse reports, without blocking, whether an idle connection can
// carry another request: the upstream has not closed it, and has not sent
// bytes that no request asked for (which the next request would read as
// its response).
func (uc *upstreamConn) fitForReuse() bool {
	if uc.raw == nil {
		return true
	}
	uc.unfit = false
	if err := uc.raw.Read(uc.peekFn); err != nil {
		return false
	}
	return !uc.unfit
}

func (uc *upstreamConn) peek(fd uintptr) bool {
	n, err := peekByte(fd, &uc.peeked)
	// n > 0: stray bytes; n == 0 without error: closed; an error other
	// than EAGAIN: broken. EAGAIN: idle and open, as it should be.
	uc.unfit = n > 0 || n == 0 && err == nil || err != nil && !errors.Is(err, unix.EAGAIN)
	return true
}

// discard closes the connection and gives back its buffers. Only the
// goroutine that owns the connection may call it; others use Close, which
// only makes its reads and writes fail.
func (uc *upstreamConn) discard() {
	uc.Close()
	uc.in.release()
	uc.out.release()
}

// maxResponseHead bounds a response's status line and headers: an upstream
// must not be able to make the proxy buffer without end either.
const maxResponseHead = 1 << 20

// h1Pool keeps idle upstream connections, at most maxIdle per endpoint
// and identity, for at most idleTimeout. New connections are dialed by
// upstream.Dialer.Dial (mesh TLS with ALPN meshapi.ALPNHTTP1 to a meshed
// endpoint).
type h1Pool struct {
	dial        func(ctx context.Context, t upstream.Target) (net.Conn, error)
	maxIdle     int
	idleTimeout time.Duration

	mu     sync.Mutex
	idle   map[poolKey][]*upstreamConn
	closed bool
}

func newH1Pool(dial func(context.Context, upstream.Target) (net.Conn, error), maxIdle int, idleTimeout time.Duration) *h1Pool {
	return &h1Pool{dial: dial, maxIdle: maxIdle, idleTimeout: idleTimeout, idle: map[poolKey][]*upstreamConn{}}
}

// get returns an idle connection to t, most recently used first, or
// dials a new one; reused tells which.
func (p *h1Pool) get(ctx context.Context, t upstream.Target) (uc *upstreamConn, reused bool, err error) {
	addr := poolKey{t.Addr, t.Identity}
	p.mu.Lock()
	for list := p.idle[addr]; len(list) > 0; list = p.idle[addr] {
		uc = list[len(list)-1]
		list[len(list)-1] = nil
		p.idle[addr] = list[:len(list)-1]
		if time.Since(uc.idleSince) < p.idleTimeout {
			p.mu.Unlock()
			if uc.fitForReuse() {
				return uc, true, nil
			}
			uc.discard()
			p.mu.Lock()
			continue
		}
		uc.discard()
	}
	p.mu.Unlock()
	c, err := p.dial(ctx, t)
	if err != nil {
		return nil, false, err
	}
	return newUpstreamConn(c, addr), false, nil
}

// put returns a connection whose last response was read to the end.
func (p *h1Pool) put(uc *upstreamConn) {
	if len(uc.in.buffered()) > 0 {
		// Bytes after the end of the response: not a response to any
		// request of ours, and nothing the next request may read.
		uc.discard()
		return
	}
	uc.in.shrink()
	uc.out.shrink()
	uc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[uc.key]) >= p.maxIdle {
		p.mu.Unlock()
		uc.discard()
		return
	}
	p.idle[uc.key] = append(p.idle[uc.key], uc)
	p.mu.Unlock()
}

// reap closes the connections idle for idleTimeout or more at now, and
// forgets addresses left without any, so that connections to endpoints a
// reload removed do not stay open for ever.
func (p *h1Pool) reap(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, list := range p.idle {
		kept := list[:0]
		for _, uc := range list {
			if now.Sub(uc.idleSince) >= p.idleTimeout {
				uc.discard()
				continue
			}
			kept = append(kept, uc)
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(p.idle, addr)
		} else {
			p.idle[addr] = kept
		}
	}
}

// idleCount returns the number of idle connections.
func (p *h1Pool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, list := range p.idle {
		n += len(list)
	}
	return n
}

// close closes the idle connections and every connection put back later.
func (p *h1Pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, list := range p.idle {
		for _, uc := range list {
			uc.discard()
		}
		delete(p.idle, addr)
	}
}
