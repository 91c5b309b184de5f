package webhook

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/controller/admin"
	"github.com/meshctl/mesh/internal/promtext"
)

// Result is how the webhook answered one request; it is the label of the
// requests counter.
type Result int

const (
	// Injected: the pod was allowed with a patch that adds the proxy.
	Injected Result = iota
	// Skipped: the pod (or another object or operation) was allowed
	// unchanged on purpose: opted out, host network, another mesh, not a
	// pod creation.
	Skipped
	// Error: the pod was allowed unchanged because of the mesh's own
	// trouble (no valid MeshConfig, an injection or patch failure).
	Error
	// Invalid: the request was not an AdmissionReview the webhook could
	// answer and got an HTTP error status.
	Invalid
	numResults
)

var resultNames = [numResults]string{"injected", "skipped", "error", "invalid"}

func (r Result) String() string { return resultNames[r] }

// latencyBuckets are the upper bounds, in seconds, of the request duration
// histogram. The API server's webhook timeout is at most 30 s and usually
// 10 s; an injection takes well under a millisecond of CPU.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}

// Metrics counts the webhook's requests by result and their duration. The
// zero value is ready to use and safe for concurrent use.
type Metrics struct {
	requests [numResults]atomic.Uint64
	latency  admin.Histogram
}

// Observe records one request.
func (m *Metrics) Observe(r Result, took time.Duration) {
	m.requests[r].Add(1)
	m.latency.Observe(latencyBuckets, took)
}

// Count returns how many requests ended with r.
func (m *Metrics) Count(r Result) uint64 { return m.requests[r].Load() }

// WriteMetrics writes the webhook's series in the Prometheus text format.
func (m *Metrics) WriteMetrics(w io.Writer) error {
	pw := promtext.NewWriter(w)
	pw.Header("meshctl_controller_webhook_requests_total", promtext.Counter, "Injection webhook requests by result: injected, skipped, error (allowed unchanged because of the mesh's own trouble) or invalid (refused with an HTTP error).")
	for r := Result(0); r < numResults; r++ {
		pw.SampleUint("meshctl_controller_webhook_requests_total", m.requests[r].Load(), "result", r.String())
	}
	m.latency.Write(pw, latencyBuckets, "meshctl_controller_webhook_request_duration_seconds",
		"Time from reading an injection webhook request to writing its answer.")
	return pw.Flush()
}
