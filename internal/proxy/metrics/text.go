package metrics

import (
	"bufio"
	"io"
	"sort"
	"strconv"
	"strings"
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
// (version 0.0.4), followed by gauges.
func (r *Registry) WriteText(w io.Writer, gauges []Gauge) error {
	bw := bufio.NewWriter(w)
	all := r.sortedSeries()

	header(bw, "meshproxy_requests_total", "counter", "HTTP requests (HTTP/2 streams) finished, by status code and method class; code 0 means no response was sent.")
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
		for i, k := range keys {
			sample(bw, "meshproxy_requests_total", s.key, "code", strconv.Itoa(int(k.code)), "method_class", methodClassNames[k.class], float64(vals[i]))
		}
	}

	header(bw, "meshproxy_request_duration_seconds", "histogram", "Time from the first byte of a request to the end of its response.")
	for _, s := range all {
		var cum uint64
		for i := range s.latency {
			cum += s.latency[i].Load()
			le := "+Inf"
			if i < len(latencyBuckets) {
				le = strconv.FormatFloat(latencyBuckets[i], 'g', -1, 64)
			}
			sample(bw, "meshproxy_request_duration_seconds_bucket", s.key, "le", le, "", "", float64(cum))
		}
		sample(bw, "meshproxy_request_duration_seconds_sum", s.key, "", "", "", "", float64(s.latencySumNs.Load())/1e9)
		sample(bw, "meshproxy_request_duration_seconds_count", s.key, "", "", "", "", float64(cum))
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
		header(bw, c.name, "counter", c.help)
		for _, s := range all {
			sample(bw, c.name, s.key, "", "", "", "", float64(c.get(s)))
		}
	}
	header(bw, "meshproxy_tcp_bytes_total", "counter", "Bytes carried by closed connections, by flow: to_server (from the client) and to_client.")
	for _, s := range all {
		sample(bw, "meshproxy_tcp_bytes_total", s.key, "flow", "to_server", "", "", float64(s.tcpToServer.Load()))
		sample(bw, "meshproxy_tcp_bytes_total", s.key, "flow", "to_client", "", "", float64(s.tcpToClient.Load()))
	}
	header(bw, "meshproxy_errors_total", "counter", "Requests and connections the proxy failed, by reason.")
	for _, s := range all {
		for i := range s.errors {
			if v := s.errors[i].Load(); v > 0 {
				sample(bw, "meshproxy_errors_total", s.key, "reason", reasonNames[i], "", "", float64(v))
			}
		}
	}
	header(bw, "meshproxy_detections_total", "counter", "Protocol detection outcomes of accepted connections.")
	for d := range r.detections {
		for i := range r.detections[d] {
			bw.WriteString("meshproxy_detections_total{direction=\"" + Direction(d).String() + "\",protocol=\"" + detectionNames[i] + "\"} ")
			bw.WriteString(strconv.FormatUint(r.detections[d][i].Load(), 10))
			bw.WriteByte('\n')
		}
	}
	header(bw, "meshproxy_mtls_connections_total", "counter", "Mesh TLS connections with a peer proxy, by direction and the peer's verified SPIFFE id.")
	for _, pc := range r.sortedPeers() {
		bw.WriteString("meshproxy_mtls_connections_total{direction=\"" + pc.key.dir.String() + "\",peer_identity=" + quoteLabel(pc.key.identity) + "} ")
		bw.WriteString(strconv.FormatUint(pc.n, 10))
		bw.WriteByte('\n')
	}
	lastName := ""
	for _, g := range gauges {
		if g.Name != lastName {
			typ := g.Type
			if typ == "" {
				typ = "gauge"
			}
			header(bw, g.Name, typ, g.Help)
			lastName = g.Name
		}
		bw.WriteString(g.Name)
		if len(g.Labels) > 0 {
			bw.WriteByte('{')
			for i, l := range g.Labels {
				if i > 0 {
					bw.WriteByte(',')
				}
				bw.WriteString(l[0] + "=" + quoteLabel(l[1]))
			}
			bw.WriteByte('}')
		}
		bw.WriteByte(' ')
		bw.WriteString(strconv.FormatFloat(g.Value, 'g', -1, 64))
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

func header(w *bufio.Writer, name, typ, help string) {
	w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}

// sample writes one line with the series' labels and up to two more.
func sample(w *bufio.Writer, name string, k seriesKey, l1, v1, l2, v2 string, v float64) {
	w.WriteString(name)
	w.WriteString("{direction=\"")
	w.WriteString(k.dir.String())
	w.WriteString("\",service=")
	w.WriteString(quoteLabel(k.service))
	if l1 != "" {
		w.WriteString("," + l1 + "=" + quoteLabel(v1))
	}
	if l2 != "" {
		w.WriteString("," + l2 + "=" + quoteLabel(v2))
	}
	w.WriteString("} ")
	w.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	w.WriteByte('\n')
}

// quoteLabel quotes a label value as the text format wants it: only
// backslash, double quote and line feed are escaped (Go's quoting would
// also escape tabs and non-ASCII, which Prometheus' parser refuses).
func quoteLabel(v string) string {
	return `"` + labelEscaper.Replace(v) + `"`
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

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
