package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/promtext"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
)

func TestHistogramReadsBackWithPrometheus(t *testing.T) {
	bounds := []float64{0.001, 0.01, 1}
	var h Histogram
	h.Observe(bounds, 500*time.Microsecond)
	h.Observe(bounds, 5*time.Millisecond)
	h.Observe(bounds, 3*time.Second)
	var b strings.Builder
	w := promtext.NewWriter(&b)
	h.Write(w, bounds, "x_seconds", "Time of x.")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got := promtexttest.Parse(t, b.String())["x_seconds"].Metric[0].Histogram
	if got.GetSampleCount() != 3 || got.GetSampleSum() != 3.0055 {
		t.Errorf("count %d sum %v, want 3 and 3.0055", got.GetSampleCount(), got.GetSampleSum())
	}
	var cum []uint64
	for _, bk := range got.Bucket {
		cum = append(cum, bk.GetCumulativeCount())
	}
	if len(cum) != 4 || cum[0] != 1 || cum[1] != 2 || cum[2] != 2 || cum[3] != 3 {
		t.Errorf("cumulative bucket counts %v, want [1 2 2 3]\n%s", cum, b.String())
	}
}
