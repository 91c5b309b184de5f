package telemetry

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// One record feeds the metrics and the access log alike.
func TestRecordFeedsMetricsAndAccessLog(t *testing.T) {
	reg := metrics.New()
	var log bytes.Buffer
	r := NewRecorder(reg, &log)
	if !r.Logging() {
		t.Fatal("logging off with an access log")
	}
	conn := &Conn{Direction: metrics.Outbound, Client: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000},
		Destination: netip.MustParseAddrPort("10.96.0.12:80"), Protocol: "http1"}
	start := time.Date(2026, 12, 1, 5, 0, 0, 0, time.UTC)
	r.Record(&Record{Kind: Request, Conn: conn, Service: "web.test", Upstream: "10.0.1.5:8080", Method: "GET", Path: "/",
		Class: metrics.MethodRead, Status: 200, Start: start, Duration: 1500 * time.Microsecond, BytesSent: 10})
	rec := &Record{Kind: Connection, Conn: conn, Service: "web.test", Start: start}
	rec.Fail(metrics.ReasonConnect)
	r.Record(rec)

	var text strings.Builder
	reg.WriteText(&text, nil)
	for _, want := range []string{
		`meshproxy_requests_total{direction="outbound",service="web.test",code="200",method_class="read"} 1`,
		`meshproxy_errors_total{direction="outbound",service="web.test",reason="connect"} 1`,
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("metrics lack %s\n%s", want, text.String())
		}
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d access log lines", len(lines))
	}
	var e AccessEntry
	json.Unmarshal([]byte(lines[0]), &e)
	if e.Time != "2026-12-01T05:00:00Z" || e.Service != "web.test" || e.Status != 200 || e.DurationMs != 1.5 ||
		e.Client != "127.0.0.1:40000" || e.Upstream != "10.0.1.5:8080" || e.Error != "" {
		t.Errorf("request line %+v", e)
	}
	var c AccessEntry
	json.Unmarshal([]byte(lines[1]), &c)
	if c.Error != "connect" || c.Status != 0 || c.Upstream != "" {
		t.Errorf("connection line %+v", c)
	}
	if NewRecorder(reg, nil).Logging() {
		t.Error("logging on without an access log")
	}
}
