package promtext_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/promtext"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
)

// Label values and help texts that Go quoting would break: Prometheus'
// parser refuses \t, \u00fc and \x escapes, so each must come out as the
// format writes it and read back unchanged.
func TestValuesReadBackThroughPrometheusParser(t *testing.T) {
	values := []string{"plain", "tab\there", `quote"and\backslash`, "line\nfeed", "ünïcode ☃", "", "trailing\\"}
	var b strings.Builder
	w := promtext.NewWriter(&b)
	w.Header("x_total", promtext.Counter, "Help with a \\ backslash, a\nline feed, a \"quote\" and a\ttab.")
	for i, v := range values {
		w.SampleUint("x_total", uint64(i), "value", v, "other", "o")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f := promtexttest.Parse(t, b.String())["x_total"]
	if got, want := f.GetHelp(), "Help with a \\ backslash, a\nline feed, a \"quote\" and a\ttab."; got != want {
		t.Errorf("help read back as %q, want %q", got, want)
	}
	for i, v := range values {
		got, ok := promtexttest.Value(promtexttest.Parse(t, b.String()), "x_total", "value", v, "other", "o")
		if !ok || got != float64(i) {
			t.Errorf("label value %q: read back %v (found %v), want %d\n%s", v, got, ok, i, b.String())
		}
	}
}

func TestInvalidUTF8BecomesReplacementCharacter(t *testing.T) {
	var b strings.Builder
	w := promtext.NewWriter(&b)
	w.Header("x", promtext.Gauge, "bad \xff help")
	w.Sample("x", 1, "id", "spiffe://td/\xffbad")
	w.Flush()
	fams := promtexttest.Parse(t, b.String())
	if _, ok := promtexttest.Value(fams, "x", "id", "spiffe://td/\uFFFDbad"); !ok {
		t.Errorf("invalid UTF-8 not replaced:\n%q", b.String())
	}
}

func TestNumbers(t *testing.T) {
	var b strings.Builder
	w := promtext.NewWriter(&b)
	w.Header("g", promtext.Gauge, "g")
	w.Sample("g", math.Inf(1), "k", "inf")
	w.Sample("g", math.Inf(-1), "k", "-inf")
	w.Sample("g", math.NaN(), "k", "nan")
	w.Sample("g", 0.25, "k", "quarter")
	w.SampleInt("g", -3, "k", "negative")
	w.Header("c_total", promtext.Counter, "c")
	w.SampleUint("c_total", math.MaxUint64)
	w.Flush()
	want := `# HELP g g
# TYPE g gauge
g{k="inf"} +Inf
g{k="-inf"} -Inf
g{k="nan"} NaN
g{k="quarter"} 0.25
g{k="negative"} -3
# HELP c_total c
# TYPE c_total counter
c_total 18446744073709551615
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	promtexttest.Parse(t, b.String())
}

func TestHistogram(t *testing.T) {
	var b strings.Builder
	w := promtext.NewWriter(&b)
	w.Header("d_seconds", promtext.Histogram, "d")
	w.Histogram("d_seconds", []float64{0.001, 0.5}, []uint64{2, 0, 1}, 1.75, "direction", "inbound")
	w.Histogram("d_seconds", []float64{0.001, 0.5}, []uint64{0, 0, 0}, 0)
	w.Flush()
	want := `# HELP d_seconds d
# TYPE d_seconds histogram
d_seconds_bucket{direction="inbound",le="0.001"} 2
d_seconds_bucket{direction="inbound",le="0.5"} 2
d_seconds_bucket{direction="inbound",le="+Inf"} 3
d_seconds_sum{direction="inbound"} 1.75
d_seconds_count{direction="inbound"} 3
d_seconds_bucket{le="0.001"} 0
d_seconds_bucket{le="0.5"} 0
d_seconds_bucket{le="+Inf"} 0
d_seconds_sum 0
d_seconds_count 0
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	fams := promtexttest.Parse(t, b.String())
	if h := fams["d_seconds"].Metric[0].Histogram; h.GetSampleCount() != 3 || h.GetSampleSum() != 1.75 {
		t.Errorf("histogram read back as %v", h)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestFlushReturnsTheWriteError(t *testing.T) {
	w := promtext.NewWriter(failingWriter{})
	w.Header("x", promtext.Gauge, "x")
	w.Sample("x", 1)
	if err := w.Flush(); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("Flush: %v, want the write error", err)
	}
}

// The checker itself must catch what the parser lets pass.
func TestParseCatchesSplitFamilies(t *testing.T) {
	ft := &fakeT{TB: t}
	promtexttest.Parse(ft, "# HELP a a\n# TYPE a gauge\na 1\n# HELP b b\n# TYPE b gauge\nb 1\na{x=\"y\"} 2\n")
	if !ft.failed {
		t.Error("a family written in two groups passed")
	}
	ft = &fakeT{TB: t}
	promtexttest.Parse(ft, "a 1\n")
	if !ft.failed {
		t.Error("a family without HELP and TYPE passed")
	}
}

// fakeT records failures instead of failing: the test above checks that
// the checker fails, which a real testing.T cannot report without failing
// the test that asks.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Fatalf(string, ...any) { f.failed = true }
