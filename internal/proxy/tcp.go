package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/detect"
	"github.com/meshctl/mesh/internal/proxy/metrics"
	"github.com/meshctl/mesh/internal/proxy/telemetry"
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
	rec := &telemetry.Record{Kind: telemetry.Connection, Conn: &s.info, Service: s.service, Series: s.series, Start: time.Now()}
	defer func() {
		rec.Duration = time.Since(rec.Start)
		s.p.recorder.Record(rec)
	}()
	r, err := s.route(meshapi.ProtocolOpaque)
	defer r.done()
	rec.Service, rec.Series = r.service, s.seriesOf(r.service)
	if err != nil {
		rec.Fail(metrics.ReasonNoEndpoints)
		return
	}
	rec.Upstream = r.target.Addr
	up, err := s.p.dialer.Dial(context.Background(), r.target)
	if err != nil {
		rec.Fail(metrics.ReasonConnect)
		s.p.log.Debug("dialing upstream", "address", r.target.Addr, "error", err)
		return
	}
	defer up.Close()
	upTracked := s.p.track(up)
	defer s.p.untrack(upTracked)

	toServer, err := sendPeeked(cc, up)
	if err != nil {
		cc.read.Add(toServer)
		rec.BytesReceived = toServer
		rec.Fail(metrics.ReasonUpstream)
		return
	}
	upBytes, toClient, err := join(rawConn(cc), up, s.limits.TCPIdleTimeout.D())
	toServer += upBytes
	cc.read.Add(toServer)
	cc.written.Add(toClient)
	rec.BytesReceived, rec.BytesSent = toServer, toClient
	if errors.Is(err, errIdle) {
		rec.Fail(metrics.ReasonTimeout)
	}
}

// sendPeeked writes to up the bytes that detection read from the client
// and nobody has read since.
func sendPeeked(cc *countingConn, up net.Conn) (int64, error) {
	dc, ok := cc.Conn.(*detect.Conn)
	if !ok {
		return 0, nil
	}
	b := dc.Peeked()
	if len(b) == 0 {
		return 0, nil
	}
	n, err := up.Write(b)
	return int64(n), err
}

// rawConn is the connection under cc's counting and detection's replay,
// to be read directly once sendPeeked has taken what detection held:
// between two *net.TCPConn the copies use splice(2). The caller counts the
// bytes.
func rawConn(cc *countingConn) net.Conn {
	if tc, ok := tcpConn(cc); ok {
		return tc
	}
	return cc.Conn
}

// join copies bytes both ways between client and up until both directions
// have ended, honouring half-close. When one direction fails, or both have
// been silent for idle (0: no limit), both connections are closed and the
// error (errIdle for silence) returned. It returns the bytes each way.
func join(client, up net.Conn, idle time.Duration) (toServer, toClient int64, err error) {
	// A deadline left by an earlier exchange on these connections must
	// not cut the copies.
	client.SetDeadline(time.Time{})
	up.SetDeadline(time.Time{})
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	errc := make(chan error, 1)
	go func() {
		var err error
		toServer, err = pipe(up, client, idle, &last)
		errc <- err
	}()
	toClient, err1 := pipe(client, up, idle, &last)
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
	return toServer, toClient, errors.Join(err1, err2)
}

var errIdle = errors.New("connection idle")

// pipe copies src to dst until src ends, then shuts dst's write half. A
// read deadline of idle is renewed while bytes move in either direction
// (last is shared by both); when both have been silent for idle, pipe
// fails with errIdle.
func pipe(dst, src net.Conn, idle time.Duration, last *atomic.Int64) (int64, error) {
	var total int64
	for {
		if idle > 0 {
			src.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := copyChunk(dst, src)
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

// copyChunk copies at most tcpChunk bytes from src to dst, and returns
// io.EOF when src has ended. Between two TCP connections it splices with
// a pipe lent only while bytes move (see copyTCP).
func copyChunk(dst, src net.Conn) (int64, error) {
	if d, ok := dst.(*net.TCPConn); ok {
		if s, ok := src.(*net.TCPConn); ok {
			return splicePipes.copyTCP(d, s, tcpChunk)
		}
	}
	return io.CopyN(dst, src, tcpChunk)
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
