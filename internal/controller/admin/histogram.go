package admin

import (
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/promtext"
)

// MaxHistogramBounds is the most upper bounds a Histogram takes.
const MaxHistogramBounds = 16

// Histogram is a latency histogram of one series, written in the
// Prometheus text format: the webhook, identity issuance and push each
// keep one. The bounds (upper bounds in seconds, ascending, at most
// MaxHistogramBounds) are the caller's and must be the same on every call.
// The zero value is ready to use and safe for concurrent use.
type Histogram struct {
	counts   [MaxHistogramBounds + 1]atomic.Uint64 // per bound, then +Inf
	sumNanos atomic.Int64
}

// Observe counts one duration.
func (h *Histogram) Observe(bounds []float64, d time.Duration) {
	secs := d.Seconds()
	i := 0
	for i < len(bounds) && secs > bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNanos.Add(int64(d))
}

// Write writes the histogram as the family name: HELP, TYPE and samples.
func (h *Histogram) Write(w *promtext.Writer, bounds []float64, name, help string) {
	var counts [MaxHistogramBounds + 1]uint64
	for i := 0; i <= len(bounds); i++ {
		counts[i] = h.counts[i].Load()
	}
	w.Header(name, promtext.Histogram, help)
	w.Histogram(name, bounds, counts[:len(bounds)+1], float64(h.sumNanos.Load())/1e9)
}
