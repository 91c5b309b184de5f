package metrics

import (
	"io"
	"sort"
	"strconv"

	"github.com/meshctl/mesh/internal/promtext"
)

// Gauge is a value the registry does not own but writes with its series,
// such as open connections per listener. Type is "gauge" unless set
// ("counter" for a value that only grows).
type Gauge struct {
	Name   string
	Help   string
	Type   string
	Labels [][2]string
	Value  float64
}

// WriteText writes every series in the Prometheus text exposition format
// (version 0.0.4), followed by gauges. Gauges of one name are written as
// one family, under the Help and Type of the first, wherever they stand in
// the list.
func (r *Registry) WriteText(w io.Writer, gauges []Gauge) error {
	pw := promtext.NewWriter(w)
	all := r.sortedSeries()

	pw.Header("meshproxy_requests_total", promtext.Counter, "HTTP requests (HTTP/2 streams) finished, by status code and method class; code 0 means no response was sent.")
	for _, s := range all {
		s.mu.RLock()
		keys := make([]requestKey, 0, len(s.requests))
		for k := range s.requests {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].code != keys[j].code {
				return keys[i].code < keys[j].code
			}
			return keys[i].class < keys[j].class
		})
		vals := make([]uint64, len(keys))
		for i, k := range keys {
			vals[i] = s.requests[k].Load()
		}
		s.mu.RUnlock()
		dir := s.key.dir.String()
		for i, k := range keys {
			pw.SampleUint("meshproxy_requests_total", vals[i], "direction", dir, "service", s.key.service,
				"code", strconv.Itoa(int(k.code)), "method_class", methodClassNames[k.class])
		}
	}

	pw.Header("meshproxy_request_duration_seconds", promtext.Histogram, "Time from the first byte of a request to the end of its response.")
	var counts [len(latencyBuckets) + 1]uint64
	for _, s := range all {
		for i := range s.latency {
			counts[i] = s.latency[i].Load()
		}
		pw.Histogram("meshproxy_request_duration_seconds", latencyBuckets[:], counts[:], float64(s.latencySumNs.Load())/1e9,
			"direction", s.key.dir.String(), "service", s.key.service)
	}

	counters := []struct {
		name, help string
		get        func(*Series) uint64
	}{
		{"meshproxy_request_bytes_total", "Bytes of HTTP request bodies forwarded.", func(s *Series) uint64 { return s.reqBytes.Load() }},
		{"meshproxy_response_bytes_total", "Bytes of HTTP response bodies forwarded.", func(s *Series) uint64 { return s.respBytes.Load() }},
		{"meshproxy_tcp_connections_opened_total", "Connections accepted.", func(s *Series) uint64 { return s.tcpOpened.Load() }},
		{"meshproxy_tcp_connections_closed_total", "Connections closed.", func(s *Series) uint64 { return s.tcpClosed.Load() }},
		{"meshproxy_retries_total", "Requests sent to another endpoint because the first did not process them.", func(s *Series) uint64 { return s.retries.Load() }},
	}
	for _, c := range counters {
		pw.Header(c.name, promtext.Counter, c.help)
		for _, s := range all {
			pw.SampleUint(c.name, c.get(s), "direction", s.key.dir.String(), "service", s.key.service)
		}
	}
	pw.Header("meshproxy_tcp_bytes_total", promtext.Counter, "Bytes carried by closed connections, by flow: to_server (from the client) and to_client.")
	for _, s := range all {
		dir := s.key.dir.String()
		pw.SampleUint("meshproxy_tcp_bytes_total", s.tcpToServer.Load(), "direction", dir, "service", s.key.service, "flow", "to_server")
		pw.SampleUint("meshproxy_tcp_bytes_total", s.tcpToClient.Load(), "direction", dir, "service", s.key.service, "flow", "to_client")
	}
	pw.Header("meshproxy_errors_total", promtext.Counter, "Requests and connections the proxy failed, by reason.")
	for _, s := range all {
		for i := range s.errors {
			if v := s.errors[i].Load(); v > 0 {
				pw.SampleUint("meshproxy_errors_total", v, "direction", s.key.dir.String(), "service", s.key.service, "reason", reasonNames[i])
			}
		}
	}
	pw.Header("meshproxy_detections_total", promtext.Counter, "Protocol detection outcomes of accepted connections.")
	for d := range r.detections {
		for i := range r.detections[d] {
			pw.SampleUint("meshproxy_detections_total", r.detections[d][i].Load(), "direction", Direction(d).String(), "protocol", detectionNames[i])
		}
	}
	pw.Header("meshproxy_mtls_connections_total", promtext.Counter, "Mesh TLS connections with a peer proxy, by direction and the peer's verified SPIFFE id.")
	for _, pc := range r.sortedPeers() {
		pw.SampleUint("meshproxy_mtls_connections_total", pc.n, "direction", pc.key.dir.String(), "peer_identity", pc.key.identity)
	}
	writeGauges(pw, gauges)
	return pw.Flush()
}

// writeGauges writes gauges grouped by name in the order their names first
// appear: the format wants each family's lines together, under one HELP
// and TYPE.
func writeGauges(pw *promtext.Writer, gauges []Gauge) {
	var labels []string
	for i, g := range gauges {
		if seenBefore(gauges[:i], g.Name) {
			continue
		}
		typ := g.Type
		if typ == "" {
			typ = promtext.Gauge
		}
		pw.Header(g.Name, typ, g.Help)
		for _, m := range gauges[i:] {
			if m.Name != g.Name {
				continue
			}
			labels = labels[:0]
			for _, l := range m.Labels {
				labels = append(labels, l[0], l[1])
			}
			pw.Sample(m.Name, m.Value, labels...)
		}
	}
}

func seenBefore(gauges []Gauge, name string) bool {
	for _, g := range gauges {
		if g.Name == name {
			return true
		}
	}
	return false
}

type peerCount struct {
	key peerKey
	n   uint64
}

func (r *Registry) sortedPeers() []peerCount {
	r.mu.RLock()
	out := make([]peerCount, 0, len(r.peers))
	for k, c := range r.peers {
		out = append(out, peerCount{k, c.Load()})
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].key.dir != out[j].key.dir {
			return out[i].key.dir < out[j].key.dir
		}
		return out[i].key.identity < out[j].key.identity
	})
	return out
}
