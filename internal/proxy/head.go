package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"
)

// headRecorder sits between the client connection and the HTTP/1 reader
// and keeps a copy of the bytes of one request head while it is parsed, so
// that the raw head can be checked for what http.ReadRequest normalises
// away. It also stops a head that grows past the limit.
type headRecorder struct {
	r        io.Reader
	on       bool
	buf      []byte
	limit    int
	tooLarge bool
}

var errHeadTooLarge = errors.New("request header too large")

func (h *headRecorder) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.on && n > 0 {
		h.buf = append(h.buf, p[:n]...)
		if len(h.buf) > h.limit {
			h.tooLarge = true
			return n, errHeadTooLarge
		}
	}
	return n, err
}

// begin starts recording with the bytes br already holds. The limit allows
// one read buffer beyond max, because a read may bring body bytes along.
func (h *headRecorder) begin(br *bufio.Reader, max int) {
	h.buf = h.buf[:0]
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		h.buf = append(h.buf, b...)
	}
	h.limit = max + br.Size()
	h.tooLarge = false
	h.on = true
}

// end stops recording and returns the bytes from the start of the head; the
// head ends at its first empty line, and bytes after it are not the head's.
func (h *headRecorder) end() []byte {
	h.on = false
	return h.buf
}

// release drops a buffer grown by an unusually large head.
func (h *headRecorder) release() {
	h.buf = nil
}

// headFacts is what scanHead learns from a raw request head.
type headFacts struct {
	fields           int
	size             int
	contentLength    bool
	transferEncoding bool
	bad              bool
}

// scanHead counts the header fields and bytes of a raw request head and
// notes the framing fields it carries.
func scanHead(b []byte) headFacts {
	var v headFacts
	first := true
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return v
		}
		line := b[:i]
		b = b[i+1:]
		v.size += i + 1
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if first {
			first = false
			continue
		}
		if len(line) == 0 {
			return v
		}
		v.fields++
		// RFC 9112 section 5: a field name is a token directly followed by
		// a colon; whitespace before the colon and obsolete line folding
		// are rejected, since other parsers read them differently.
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			v.bad = true
			return v
		}
		for _, c := range line[:colon] {
			if !isToken(c) {
				v.bad = true
				return v
			}
		}
		switch {
		case hasFieldName(line, "content-length"):
			v.contentLength = true
		case hasFieldName(line, "transfer-encoding"):
			v.transferEncoding = true
		}
	}
}

func isToken(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func hasFieldName(line []byte, name string) bool {
	return len(line) > len(name) && line[len(name)] == ':' && asciiEqualFold(string(line[:len(name)]), name)
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// hopByHop are the fields that describe one connection rather than the
// message (RFC 9110 section 7.6.1), and so are never forwarded.
// Proxy-Connection is not standard but still sent by old clients.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Transfer-Encoding", "Upgrade"}

// removeHopByHop deletes the hop-by-hop fields and every field the
// Connection header names. "TE: trailers" is kept: it tells a gRPC server
// that the client understands trailers, end to end.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" && !asciiEqualFold(name, "te") {
				h.Del(name)
			}
		}
	}
	trailers := false
	for _, v := range h["Te"] {
		if strings.Contains(strings.ToLower(v), "trailers") {
			trailers = true
		}
	}
	for _, k := range hopByHop {
		if _, ok := h[k]; ok {
			delete(h, k)
		}
	}
	if trailers {
		h["Te"] = []string{"trailers"}
	}
}

// upgradeType returns the protocol a request asks to switch to, or "".
func upgradeType(h http.Header) string {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if asciiEqualFold(textproto.TrimString(name), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}

// idleGuard calls onFire once when a request has moved no byte for idle,
// or has lasted total (either may be 0 for off). touch is an atomic store,
// cheap enough for every read and write; the timers re-arm themselves for
// the remaining time instead of being reset on each touch.
//
// A guard serves one request after another (one per HTTP/1 connection, so
// that a request allocates no timer): arm starts watching the next one. A
// timer callback of an earlier request that runs late re-checks the times
// of the current one, so it can never fire early.
type idleGuard struct {
	idle, total time.Duration // fixed for the guard's life
	start       atomic.Int64  // arm time, Unix ns
	last        atomic.Int64  // last byte moved, Unix ns
	fire        atomic.Bool
	stopped     atomic.Bool
	onFire      func()
	idleT       *time.Timer
	totalT      *time.Timer
}

// newIdleGuard returns a guard armed for a first request.
func newIdleGuard(idle, total time.Duration, onFire func()) *idleGuard {
	g := newStoppedGuard(idle, total, onFire)
	g.arm()
	return g
}

// newStoppedGuard returns a guard to arm later.
func newStoppedGuard(idle, total time.Duration, onFire func()) *idleGuard {
	g := &idleGuard{idle: idle, total: total, onFire: onFire}
	g.stopped.Store(true)
	if idle > 0 {
		g.idleT = time.AfterFunc(time.Duration(1<<62), g.check)
		g.idleT.Stop()
	}
	if total > 0 {
		g.totalT = time.AfterFunc(time.Duration(1<<62), g.checkTotal)
		g.totalT.Stop()
	}
	return g
}

// arm starts watching a request.
func (g *idleGuard) arm() {
	now := time.Now().UnixNano()
	g.start.Store(now)
	g.last.Store(now)
	g.fire.Store(false)
	g.stopped.Store(false)
	if g.idleT != nil {
		g.idleT.Reset(g.idle)
	}
	if g.totalT != nil {
		g.totalT.Reset(g.total)
	}
}

func (g *idleGuard) touch() {
	if g.idleT != nil {
		g.last.Store(time.Now().UnixNano())
	}
}

func (g *idleGuard) check() {
	if g.stopped.Load() {
		return
	}
	since := time.Since(time.Unix(0, g.last.Load()))
	if since < g.idle {
		g.idleT.Reset(g.idle - since)
		return
	}
	g.trigger()
}

func (g *idleGuard) checkTotal() {
	if g.stopped.Load() {
		return
	}
	since := time.Since(time.Unix(0, g.start.Load()))
	if since < g.total {
		g.totalT.Reset(g.total - since)
		return
	}
	g.trigger()
}

func (g *idleGuard) trigger() {
	if g.stopped.Load() {
		return
	}
	if g.fire.CompareAndSwap(false, true) {
		g.onFire()
	}
}

func (g *idleGuard) fired() bool { return g.fire.Load() }

// stop disarms the guard until the next arm.
func (g *idleGuard) stop() {
	g.stopped.Store(true)
	if g.idleT != nil {
		g.idleT.Stop()
	}
	if g.totalT != nil {
		g.totalT.Stop()
	}
}
