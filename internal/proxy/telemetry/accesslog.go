package telemetry

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
	PeerIdentity  string  `json:"peerIdentity,omitempty"`
	DurationMs    float64 `json:"durationMs"`
	BytesReceived int64   `json:"bytesReceived"`
	BytesSent     int64   `json:"bytesSent"`
	Error         string  `json:"error,omitempty"`
}

func (a *accessLog) write(r *Record) {
	e := &AccessEntry{
		Time:          r.Start.UTC().Format(time.RFC3339Nano),
		Direction:     r.Conn.Direction.String(),
		Protocol:      r.Conn.Protocol,
		Service:       r.Service,
		Client:        r.Conn.Client.String(),
		Destination:   r.Conn.Destination.String(),
		Upstream:      r.Upstream,
		Method:        r.Method,
		Authority:     r.Authority,
		Path:          r.Path,
		Status:        r.Status,
		SNI:           r.Conn.SNI,
		PeerIdentity:  r.Conn.PeerIdentity,
		DurationMs:    float64(r.Duration.Microseconds()) / 1000,
		BytesReceived: r.BytesReceived,
		BytesSent:     r.BytesSent,
	}
	if r.Failed {
		e.Error = r.Reason.String()
	}
	a.mu.Lock()
	a.enc.Encode(e)
	a.mu.Unlock()
}
