package proxy

import (
	"net"
	"strings"
	"sync/atomic"

	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// h2Account counts how the Go HTTP/2 server ended a client connection
// when it ended it for the client's misbehaviour, which the server does
// not tell its handler. It sees three things: the server's CountError
// calls, the frames the server writes (a GOAWAY with an error code), and
// whether the client had gone before the server closed. Each connection
// is counted at most once, under the first reason found:
//
//   - http2_flood: a rapid reset (streams reset faster than handlers
//     start), a SETTINGS frame of more than 100 parameters, or a close
//     without GOAWAY while the client was still there, which is what the
//     server does when control frames it owes (PING and SETTINGS
//     acknowledgements) pile up past 10,000 unread, or when no SETTINGS
//     came within 2 s of the preface;
//   - http2_protocol: any other connection error (GOAWAY with an error
//     code);
//   - header_limit: a header block refused for its size, counted by the
//     read filter (headerCheck) and not again here.
type h2Account struct {
	net.Conn
	series *metrics.Series

	counted  atomic.Bool // a connection-level reason was counted
	goAway   atomic.Bool // the server wrote a GOAWAY (any code)
	peerGone atomic.Bool // a read or write failed before the server closed
	closed   atomic.Bool // the server closed the connection

	// Frame boundaries of what the server writes.
	whdr    [9]byte
	whdrLen int
	wleft   int    // payload bytes of the current frame still to pass
	woff    int    // offset in the current frame's payload
	code    uint32 // error code of the GOAWAY being written
}

const frameGoAway = 0x7

func (a *h2Account) count(r metrics.Reason) {
	if a.counted.CompareAndSwap(false, true) {
		a.series.Error(r)
	}
}

// countError is the server's CountError. Connection errors are named
// "conn_<code>_<what>", stream errors "stream_<code>_<what>", and frame
// errors (which become connection errors) "frame_<what>".
func (a *h2Account) countError(name string) {
	switch {
	case strings.HasSuffix(name, "_too_many_early_resets"), strings.HasSuffix(name, "_settings_big_or_dups"):
		a.count(metrics.ReasonHTTP2Flood)
	case strings.HasPrefix(name, "conn_"), strings.HasPrefix(name, "frame_"):
		a.count(metrics.ReasonHTTP2Protocol)
	}
}

// headerLimit counts a header block the server refuses for its size.
func (a *h2Account) headerLimit() {
	a.series.Error(metrics.ReasonHeaderLimit)
	// When the refusal ends the connection, that GOAWAY is this.
	a.counted.Store(true)
}

func (a *h2Account) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	if err != nil && !a.closed.Load() {
		a.peerGone.Store(true)
	}
	return n, err
}

func (a *h2Account) Write(p []byte) (int, error) {
	a.track(p)
	n, err := a.Conn.Write(p)
	if err != nil && !a.closed.Load() {
		a.peerGone.Store(true)
	}
	return n, err
}

func (a *h2Account) Close() error {
	a.closed.Store(true)
	return a.Conn.Close()
}

// track follows the frames in what the server writes, noting a GOAWAY
// and its error code (payload bytes 4 to 7). The server's writes begin
// with its SETTINGS frame (no preface on the server side).
func (a *h2Account) track(b []byte) {
	for len(b) > 0 {
		if a.wleft > 0 {
			n := min(a.wleft, len(b))
			if a.whdr[3] == frameGoAway {
				for i := range n {
					if pos := a.woff + i; pos >= 4 && pos < 8 {
						a.code = a.code<<8 | uint32(b[i])
						if pos == 7 && a.code != 0 {
							a.count(metrics.ReasonHTTP2Protocol)
						}
					}
				}
			}
			a.woff += n
			a.wleft -= n
			b = b[n:]
			continue
		}
		n := copy(a.whdr[a.whdrLen:], b)
		a.whdrLen += n
		b = b[n:]
		if a.whdrLen < len(a.whdr) {
			return
		}
		a.whdrLen, a.woff, a.code = 0, 0, 0
		a.wleft = int(a.whdr[0])<<16 | int(a.whdr[1])<<8 | int(a.whdr[2])
		if a.whdr[3] == frameGoAway {
			a.goAway.Store(true)
		}
	}
}

// finish counts a connection the server closed without GOAWAY while the
// client was still there.
func (a *h2Account) finish() {
	if !a.goAway.Load() && !a.peerGone.Load() && a.closed.Load() {
		a.count(metrics.ReasonHTTP2Flood)
	}
}
