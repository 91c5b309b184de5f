package metrics

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/golden"
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
	var b strings.Builder
	if err := r.WriteText(&b, []Gauge{{Name: "meshproxy_draining", Help: "1 while the proxy drains.", Value: 0}}); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, filepath.Join("testdata", "metrics.golden"), []byte(b.String()))
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
