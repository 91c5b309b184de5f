package metrics

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/golden"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
)

func TestTextGolden(t *testing.T) {
	r := New()
	s := r.Series(Outbound, "ratings.default")
	s.ConnOpened()
	s.Request(200, ClassOf("GET"), 700*time.Microsecond, 0, 512)
	s.Request(200, ClassOf("GET"), 3*time.Millisecond, 0, 512)
	s.Request(503, ClassOf("POST"), 20*time.Second, 100, 0)
	s.Request(999, ClassOf("BREW"), time.Millisecond, 0, 0)
	s.Error(ReasonConnect)
	s.ConnClosed(1000, 2000)
	in := r.Series(Inbound, "reviews")
	in.ConnOpened()
	in.Error(ReasonHeaderLimit)
	r.Detected(Outbound, DetectHTTP1)
	r.Detected(Inbound, DetectTimeout)
	r.MeshTLS(Inbound, "spiffe://cluster.local/ns/shop/sa/web")
	r.MeshTLS(Inbound, "spiffe://cluster.local/ns/shop/sa/web")
	r.MeshTLS(Outbound, "spiffe://cluster.local/ns/shop/sa/ratings")
	var b strings.Builder
	if err := r.WriteText(&b, []Gauge{{Name: "meshproxy_draining", Help: "1 while the proxy drains.", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "metrics.golden"), []byte(b.String()))
}

// Every exposition must read back with Prometheus' own parser, whatever
// the label values hold (a service or identity with a tab, quotes or
// non-ASCII characters, or bytes that are not UTF-8).
func TestTextParsesWithPrometheus(t *testing.T) {
	r := New()
	for _, v := range []string{"plain.default", "tab\there", `quote"and\backslash`, "line\nfeed", "ünïcode", "invalid\xffutf8"} {
		r.Series(Outbound, v).Request(200, MethodRead, time.Millisecond, 1, 1)
		r.MeshTLS(Inbound, "spiffe://td/ns/x/sa/"+v)
	}
	var b strings.Builder
	if err := r.WriteText(&b, []Gauge{{Name: "meshproxy_config_info", Help: "h", Labels: [][2]string{{"version", "v\t1"}}, Value: 1}}); err != nil {
		t.Fatal(err)
	}
	families := promtexttest.Parse(t, b.String())
	var ids []string
	for _, m := range families["meshproxy_mtls_connections_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "peer_identity" {
				ids = append(ids, l.GetValue())
			}
		}
	}
	if len(ids) != 6 || !slices.Contains(ids, "spiffe://td/ns/x/sa/tab\there") || !slices.Contains(ids, `spiffe://td/ns/x/sa/quote"and\backslash`) {
		t.Fatalf("label values did not read back as written: %q", ids)
	}
}

// Gauges of one name that other gauges separate in the list (a reload
// counter and a link's gauges appended by different owners) are still one
// family: a second HELP line makes Prometheus refuse the whole scrape.
func TestGaugesOfOneNameAreOneFamily(t *testing.T) {
	var b strings.Builder
	err := New().WriteText(&b, []Gauge{
		{Name: "meshproxy_config_reloads_total", Help: "Reloads.", Type: "counter", Labels: [][2]string{{"result", "ok"}}, Value: 2},
		{Name: "meshproxy_draining", Help: "1 while the proxy drains.", Value: 0},
		{Name: "meshproxy_config_reloads_total", Type: "counter", Labels: [][2]string{{"result", "failed"}}, Value: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	families := promtexttest.Parse(t, b.String())
	if v, ok := promtexttest.Value(families, "meshproxy_config_reloads_total", "result", "failed"); !ok || v != 1 {
		t.Errorf("failed reloads read back as %v, %v\n%s", v, ok, b.String())
	}
	if families["meshproxy_config_reloads_total"].GetHelp() != "Reloads." {
		t.Errorf("help of the family is %q, want the first gauge's", families["meshproxy_config_reloads_total"].GetHelp())
	}
}

func TestPeerIdentitiesAreBounded(t *testing.T) {
	r := New()
	for i := range MaxPeerIdentities + 10 {
		r.MeshTLS(Inbound, fmt.Sprintf("spiffe://td/ns/n/sa/%d", i))
	}
	r.MeshTLS(Outbound, "spiffe://td/ns/n/sa/server")
	peers := r.sortedPeers()
	if len(peers) != MaxPeerIdentities+2 {
		t.Fatalf("got %d peer series, want %d (the bound, other, and the outbound one)", len(peers), MaxPeerIdentities+2)
	}
	for _, p := range peers {
		if p.key.identity == OtherPeers && p.n != 10 {
			t.Fatalf("%q counted %d connections, want 10", OtherPeers, p.n)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	r := New()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 1000 {
				r.Series(Direction(i%2), "svc").Request(200+j%3, MethodRead, time.Millisecond, 1, 1)
			}
		}()
	}
	wg.Wait()
	var b strings.Builder
	r.WriteText(&b, nil)
	if !strings.Contains(b.String(), `meshproxy_request_duration_seconds_count{direction="inbound",service="svc"} 4000`) {
		t.Errorf("lost counts:\n%s", b.String())
	}
}

func BenchmarkRequest(b *testing.B) {
	s := New().Series(Outbound, "svc")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Request(200, MethodRead, time.Millisecond, 100, 1000)
		}
	})
}

// BenchmarkWriteText is one scrape of a proxy with 50 services each way.
func BenchmarkWriteText(b *testing.B) {
	r := New()
	for i := range 50 {
		for _, d := range []Direction{Inbound, Outbound} {
			s := r.Series(d, fmt.Sprintf("svc-%d.default", i))
			s.Request(200, MethodRead, time.Millisecond, 10, 100)
			s.Request(503, MethodWrite, time.Second, 10, 100)
			s.Error(ReasonConnect)
		}
		r.MeshTLS(Inbound, fmt.Sprintf("spiffe://td/ns/n/sa/%d", i))
	}
	gauges := []Gauge{{Name: "meshproxy_draining", Help: "1 while the proxy drains.", Value: 0}}
	b.ReportAllocs()
	for b.Loop() {
		if err := r.WriteText(io.Discard, gauges); err != nil {
			b.Fatal(err)
		}
	}
}
