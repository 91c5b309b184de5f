// Package metrics counts what the proxy forwards, per direction and
// destination service, and writes the counts in the Prometheus text format.
//
// The counters are hand-written atomics rather than client_golang: the data
// path touches them several times per request, and a plain atomic add on a
// series looked up once per connection costs nothing measurable, where a
// labelled client_golang vector costs a map lookup with label hashing per
// call. The label sets are closed: the direction, a service named by the
// configuration (every other destination is "unknown"), a status code, a
// method class and fixed reason and protocol names, so a misbehaving client
// cannot grow the series without bound.
package metrics

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Direction is the listener a connection came through.
type Direction uint8

// The two directions.
const (
	Inbound Direction = iota
	Outbound
)

func (d Direction) String() string {
	if d == Inbound {
		return "inbound"
	}
	return "outbound"
}

// Unknown is the service label of every destination the configuration does
// not name.
const Unknown = "unknown"

// MethodClass groups request methods so that extension methods cannot add
// series.
type MethodClass uint8

// Method classes: the safe methods of RFC 9110 section 9.2.1, the usual
// unsafe ones, and everything else.
const (
	MethodRead MethodClass = iota
	MethodWrite
	MethodOther
	numMethodClasses
)

var methodClassNames = [numMethodClasses]string{"read", "write", "other"}

// ClassOf returns the class of a request method.
func ClassOf(method string) MethodClass {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return MethodRead
	case "POST", "PUT", "PATCH", "DELETE":
		return MethodWrite
	}
	return MethodOther
}

// Reason is why the proxy failed a request or connection.
type Reason uint8

// The failure reasons; docs/proxy.md explains each.
const (
	ReasonConnect       Reason = iota // dialing the upstream failed
	ReasonNoEndpoints                 // the service has no endpoint
	ReasonUpstream                    // the upstream failed mid-request
	ReasonTimeout                     // a proxy timeout fired
	ReasonBadRequest                  // the client sent a malformed request (400)
	ReasonHeaderLimit                 // the request headers were too large (431)
	ReasonConnLimit                   // the listener was at its connection limit
	ReasonLoop                        // the destination was the proxy itself
	ReasonNoOriginalDst               // the original destination was unknown
	ReasonClientReset                 // the client went away mid-request
	ReasonInternal                    // the proxy failed: a bug, contained to one connection
	ReasonMTLSRequired                // plaintext refused on a port that requires mesh TLS
	ReasonHandshake                   // a peer's mesh TLS handshake failed
	ReasonHTTP2Flood                  // the HTTP/2 server refused a flood and closed the connection
	ReasonHTTP2Protocol               // the HTTP/2 server ended a connection with an error (GOAWAY)
	numReasons
)

var reasonNames = [numReasons]string{
	"connect", "no_endpoints", "upstream", "timeout", "bad_request",
	"header_limit", "connection_limit", "loop", "no_original_dst", "client_reset",
	"internal", "mtls_required", "tls_handshake", "http2_flood", "http2_protocol",
}

func (r Reason) String() string { return reasonNames[r] }

// Detection outcomes.
const (
	DetectHTTP1 = iota
	DetectHTTP2
	DetectTLS
	DetectTCP
	DetectTimeout // no decision in time: forwarded as TCP
	DetectOpaque  // detection skipped for an opaque port
	numDetections
)

var detectionNames = [numDetections]string{"http1", "h2c", "tls", "tcp", "timeout", "opaque"}

// latencyBuckets are the upper bounds, in seconds, of the request duration
// histogram: from sub-millisecond (a local hop) to ten seconds.
var latencyBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

var latencyBucketsNs = func() (b [len(latencyBuckets)]int64) {
	for i, s := range latencyBuckets {
		b[i] = int64(s * float64(time.Second))
	}
	return b
}()

// Registry holds every series. The zero value is not ready; use New.
type Registry struct {
	mu         sync.RWMutex
	series     map[seriesKey]*Series
	detections [2][numDetections]atomic.Uint64
	peers      map[peerKey]*atomic.Uint64
	nPeers     [2]int // identities in peers, by direction
}

type peerKey struct {
	dir      Direction
	identity string
}

// MaxPeerIdentities bounds the peer identities counted by MeshTLS in each
// direction; connections of further identities are counted under
// OtherPeers, so that peers cannot grow the series without bound.
const MaxPeerIdentities = 1000

// OtherPeers is the peer label past MaxPeerIdentities.
const OtherPeers = "other"

type seriesKey struct {
	dir     Direction
	service string
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{series: map[seriesKey]*Series{}, peers: map[peerKey]*atomic.Uint64{}}
}

// MeshTLS counts one mesh TLS connection with a peer proxy of the given
// SPIFFE id: inbound the verified client, outbound the verified server.
func (r *Registry) MeshTLS(d Direction, identity string) {
	k := peerKey{d, identity}
	r.mu.RLock()
	c := r.peers[k]
	r.mu.RUnlock()
	if c == nil {
		r.mu.Lock()
		if c = r.peers[k]; c == nil {
			if r.nPeers[d] >= MaxPeerIdentities {
				k.identity = OtherPeers
				c = r.peers[k]
			}
			if c == nil {
				c = new(atomic.Uint64)
				r.peers[k] = c
				r.nPeers[d]++
			}
		}
		r.mu.Unlock()
	}
	c.Add(1)
}

// Detected counts one detection outcome (DetectHTTP1 ... DetectOpaque).
func (r *Registry) Detected(d Direction, outcome int) {
	r.detections[d][outcome].Add(1)
}

// Series returns the series of one direction and service, creating it on
// first use. Callers look it up once per connection.
func (r *Registry) Series(d Direction, service string) *Series {
	k := seriesKey{d, service}
	r.mu.RLock()
	s := r.series[k]
	r.mu.RUnlock()
	if s != nil {
		return s
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s = r.series[k]; s == nil {
		s = &Series{key: k, requests: map[requestKey]*atomic.Uint64{}}
		r.series[k] = s
	}
	return s
}

// Series counts the traffic of one direction to one service.
type Series struct {
	key seriesKey

	mu       sync.RWMutex
	requests map[requestKey]*atomic.Uint64

	latency      [len(latencyBuckets) + 1]atomic.Uint64
	latencySumNs atomic.Int64
	reqBytes     atomic.Uint64
	respBytes    atomic.Uint64

	tcpOpened   atomic.Uint64
	tcpClosed   atomic.Uint64
	tcpToServer atomic.Uint64
	tcpToClient atomic.Uint64
	errors      [numReasons]atomic.Uint64
	retries     atomic.Uint64
}

type requestKey struct {
	code  uint16
	class MethodClass
}

// Request counts one finished request: its status code (clamped to
// 100-599; 0 for a request that got no response), method class, duration
// and body bytes each way.
func (s *Series) Request(code int, class MethodClass, d time.Duration, reqBytes, respBytes int64) {
	if code != 0 && (code < 100 || code > 599) {
		code = 0
	}
	k := requestKey{uint16(code), class}
	s.mu.RLock()
	c := s.requests[k]
	s.mu.RUnlock()
	if c == nil {
		s.mu.Lock()
		if c = s.requests[k]; c == nil {
			c = new(atomic.Uint64)
			s.requests[k] = c
		}
		s.mu.Unlock()
	}
	c.Add(1)
	ns := int64(d)
	i := 0
	for i < len(latencyBucketsNs) && ns > latencyBucketsNs[i] {
		i++
	}
	s.latency[i].Add(1)
	s.latencySumNs.Add(ns)
	if reqBytes > 0 {
		s.reqBytes.Add(uint64(reqBytes))
	}
	if respBytes > 0 {
		s.respBytes.Add(uint64(respBytes))
	}
}

// ConnOpened counts an accepted connection.
func (s *Series) ConnOpened() { s.tcpOpened.Add(1) }

// ConnClosed counts a closed connection and the bytes it carried each way.
func (s *Series) ConnClosed(toServer, toClient int64) {
	s.tcpClosed.Add(1)
	s.tcpToServer.Add(uint64(max(toServer, 0)))
	s.tcpToClient.Add(uint64(max(toClient, 0)))
}

// Error counts a failure.
func (s *Series) Error(r Reason) { s.errors[r].Add(1) }

// Retry counts a request sent to another endpoint because the first did
// not process it.
func (s *Series) Retry() { s.retries.Add(1) }

// sortedSeries returns the series ordered by direction and service, so that
// the text output is stable.
func (r *Registry) sortedSeries() []*Series {
	r.mu.RLock()
	out := make([]*Series, 0, len(r.series))
	for _, s := range r.series {
		out = append(out, s)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].key, out[j].key
		if a.dir != b.dir {
			return a.dir < b.dir
		}
		return a.service < b.service
	})
	return out
}
