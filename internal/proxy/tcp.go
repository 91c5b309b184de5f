package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/proxy/detect"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// tcpChunk is how many bytes one splice call may move before the idle
// deadline is pushed forward again.
const tcpChunk = 1 << 20

// forwardTCP connects the client to the upstream and copies bytes both ways
// until both sides have closed, honouring half-close: when one side ends
// its stream the other side's write half is shut, and bytes keep flowing
// the other way. Between two *net.TCPConn the copies use splice(2), so the
// proxy holds no buffer per connection.
func (s *session) forwardTCP(cc *countingConn) {
	start := time.Now()
	addr, ep, err := s.upstream()
	defer done(ep)
	if err != nil {
		s.series.Error(metrics.ReasonNoEndpoints)
		s.logTCP(start, addr, 0, 0, "no_endpoints")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.limits.ConnectTimeout.D())
	up, err := s.p.dial(ctx, "tcp", addr)
	cancel()
	if err != nil {
		s.series.Error(metrics.ReasonConnect)
		s.p.log.Debug("dialing upstream", "address", addr, "error", err)
		s.logTCP(start, addr, 0, 0, "connect")
		return
	}
	defer up.Close()
	upTracked := s.p.track(up)
	defer s.p.untrack(upTracked)

	var toServer, toClient int64
	if dc, ok := cc.Conn.(*detect.Conn); ok {
		if b := dc.Peeked(); len(b) > 0 {
			n, err := up.Write(b)
			toServer += int64(n)
			if err != nil {
				cc.read.Add(toServer)
				s.series.Error(metrics.ReasonUpstream)
				return
			}
		}
	}
	var client net.Conn = cc.Conn
	if tc, ok := tcpConn(cc); ok {
		client = tc
	}
	idle := s.limits.TCPIdleTimeout.D()
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	errc := make(chan error, 1)
	var upBytes int64
	go func() {
		var err error
		upBytes, err = pipe(up, client, idle, &last)
		errc <- err
	}()
	downBytes, err1 := pipe(client, up, idle, &last)
	if err1 != nil {
		// Unblock the other direction.
		client.Close()
		up.Close()
	}
	err2 := <-errc
	if err2 != nil && err1 == nil {
		client.Close()
		up.Close()
	}
	toServer += upBytes
	toClient += downBytes
	cc.read.Add(toServer)
	cc.written.Add(toClient)
	reason := ""
	if err := errors.Join(err1, err2); err != nil {
		if errors.Is(err, errIdle) {
			s.series.Error(metrics.ReasonTimeout)
			reason = "idle_timeout"
		}
	}
	s.logTCP(start, addr, toServer, toClient, reason)
}

var errIdle = errors.New("connection idle")

// pipe copies src to dst until src ends, then shuts dst's write half. A
// read deadline of idle is renewed while bytes move in either direction
// (last is shared by both); when both have been silent for idle, pipe
// fails with errIdle.
func pipe(dst, src net.Conn, idle time.Duration, last *atomic.Int64) (int64, error) {
	var total int64
	for {
		var n int64
		var err error
		if idle > 0 {
			src.SetReadDeadline(time.Now().Add(idle))
			n, err = io.CopyN(dst, src, tcpChunk)
		} else {
			n, err = io.Copy(dst, src)
			if err == nil {
				err = io.EOF
			}
		}
		total += n
		if n > 0 {
			last.Store(time.Now().UnixNano())
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			closeWrite(dst)
			return total, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if time.Since(time.Unix(0, last.Load())) < idle {
				continue
			}
			return total, errIdle
		default:
			return total, err
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	if tc, ok := tcpConn(c); ok {
		tc.CloseWrite()
	}
}
