package admin

import (
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"
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

// Write writes the histogram's HELP, TYPE and samples as series name.
func (h *Histogram) Write(w io.Writer, bounds []float64, name, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i := 0; i <= len(bounds); i++ {
		cum += h.counts[i].Load()
		le := "+Inf"
		if i < len(bounds) {
			le = strconv.FormatFloat(bounds[i], 'g', -1, 64)
		}
		fmt.Fprintf(w, "%s_bucket{le=%q} %d\n", name, le, cum)
	}
	fmt.Fprintf(w, "%s_sum %s\n", name, strconv.FormatFloat(float64(h.sumNanos.Load())/1e9, 'g', -1, 64))
	fmt.Fprintf(w, "%s_count %d\n", name, cum)
}
