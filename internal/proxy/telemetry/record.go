// Package telemetry turns what the proxy forwards into what people read:
// one Record per HTTP request, HTTP/2 stream or TCP connection, filled by
// the forwarder that handled it and handed once to the Recorder, which
// feeds the metrics and the access log (and tracing later). A forwarder
// says what happened; it never writes a metric or a log line itself, so
// every protocol is counted and logged the same way.
package telemetry

import (
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// Kind says what a record describes.
type Kind uint8

const (
	// Request is an HTTP/1 request or an HTTP/2 stream.
	Request Kind = iota
	// Connection is a connection forwarded as TCP.
	Connection
)

// Conn is what the records of one accepted connection share. It is
// filled when the connection is accepted and its protocol detected, and
// not changed after.
type Conn struct {
	Direction   metrics.Direction
	Client      net.Addr
	Destination netip.AddrPort
	// Protocol is the detected protocol: "http1", "h2c", "tls", "tcp",
	// "opaque".
	Protocol string
	// SNI is the server name of a TLS client hello.
	SNI string
	// PeerIdentity is the verified SPIFFE id of the client of an inbound
	// connection that came over mesh TLS; empty otherwise.
	PeerIdentity string
}

// Record is one request, stream or TCP connection.
type Record struct {
	Kind Kind
	Conn *Conn
	// Service is the destination service's label ("name.namespace"), the
	// workload's name inbound, or metrics.Unknown.
	Service string
	// Series is Service's series when the forwarder holds it already
	// (looked up once per connection); nil: the recorder looks it up.
	Series *metrics.Series
	// Upstream is the address the request went to ("ip:port"); empty when
	// it went nowhere.
	Upstream string

	// Method, Authority and Path are filled only when the recorder logs
	// (Recorder.Logging): formatting them costs allocations.
	Method, Authority, Path string
	Class                   metrics.MethodClass
	// Status is the response status sent to the client; 0 for none.
	Status int
	// Failed says the proxy failed the request or connection, for Reason.
	Failed bool
	Reason metrics.Reason

	Start    time.Time
	Duration time.Duration
	// BytesReceived and BytesSent are body bytes from and to the client
	// (for TCP, all bytes).
	BytesReceived, BytesSent int64
}

// Fail marks the record failed for reason r.
func (r *Record) Fail(reason metrics.Reason) { r.Failed, r.Reason = true, reason }

// Recorder receives every record. It is safe for concurrent use.
type Recorder struct {
	metrics *metrics.Registry
	log     *accessLog
}

// NewRecorder returns a recorder that counts into m and, when accessLog
// is not nil, writes one JSON line per record to it.
func NewRecorder(m *metrics.Registry, accessLog io.Writer) *Recorder {
	return &Recorder{metrics: m, log: newAccessLog(accessLog)}
}

// Logging reports whether records are logged, that is whether the
// forwarders should fill Method, Authority and Path.
func (r *Recorder) Logging() bool { return r.log != nil }

// Record counts rec and logs it. rec is not kept.
func (r *Recorder) Record(rec *Record) {
	s := rec.Series
	if s == nil {
		s = r.metrics.Series(rec.Conn.Direction, rec.Service)
	}
	if rec.Failed {
		s.Error(rec.Reason)
	}
	if rec.Kind == Request {
		s.Request(rec.Status, rec.Class, rec.Duration, rec.BytesReceived, rec.BytesSent)
	}
	if r.log != nil {
		r.log.write(rec)
	}
}
