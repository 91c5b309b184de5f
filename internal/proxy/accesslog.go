package proxy

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// accessLog writes one JSON object per line: one per HTTP request (or
// HTTP/2 stream) and one per connection forwarded as TCP.
type accessLog struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func newAccessLog(w io.Writer) *accessLog {
	if w == nil {
		return nil
	}
	return &accessLog{enc: json.NewEncoder(w)}
}

// AccessEntry is one line of the access log; docs/proxy.md describes each
// field.
type AccessEntry struct {
	Time          string  `json:"time"`
	Direction     string  `json:"direction"`
	Protocol      string  `json:"protocol"`
	Service       string  `json:"service"`
	Client        string  `json:"client"`
	Destination   string  `json:"destination"`
	Upstream      string  `json:"upstream,omitempty"`
	Method        string  `json:"method,omitempty"`
	Authority     string  `json:"authority,omitempty"`
	Path          string  `json:"path,omitempty"`
	Status        int     `json:"status,omitempty"`
	SNI           string  `json:"sni,omitempty"`
	DurationMs    float64 `json:"durationMs"`
	BytesReceived int64   `json:"bytesReceived"`
	BytesSent     int64   `json:"bytesSent"`
	Error         string  `json:"error,omitempty"`
}

func (a *accessLog) write(e *AccessEntry) {
	a.mu.Lock()
	a.enc.Encode(e)
	a.mu.Unlock()
}

func (s *session) entry(start time.Time, upstream, reason string) *AccessEntry {
	return &AccessEntry{
		Time:        start.UTC().Format(time.RFC3339Nano),
		Direction:   s.dir.String(),
		Protocol:    s.proto,
		Service:     s.service,
		Client:      s.client.RemoteAddr().String(),
		Destination: s.dst.String(),
		Upstream:    upstream,
		SNI:         s.sni,
		DurationMs:  float64(time.Since(start).Microseconds()) / 1000,
		Error:       reason,
	}
}

func (s *session) logRequest(method, authority, path string, code int, d time.Duration, in, out int64, upstream, reason string) {
	if s.p.accessLog == nil {
		return
	}
	e := s.entry(time.Now().Add(-d), upstream, reason)
	e.Method, e.Authority, e.Path, e.Status = method, authority, path, code
	e.BytesReceived, e.BytesSent = in, out
	s.p.accessLog.write(e)
}

func (s *session) logTCP(start time.Time, upstream string, in, out int64, reason string) {
	if s.p.accessLog == nil {
		return
	}
	e := s.entry(start, upstream, reason)
	e.BytesReceived, e.BytesSent = in, out
	s.p.accessLog.write(e)
}
