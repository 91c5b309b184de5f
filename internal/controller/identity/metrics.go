package identity

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/controller/admin"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/promtext"
)

// reasons are the label values of the refusals counter, in the order they
// are written.
var reasons = [...]string{
	meshapi.ReasonUnauthenticated,
	meshapi.ReasonWrongAudience,
	meshapi.ReasonBadRequest,
	meshapi.ReasonWrongIdentity,
	meshapi.ReasonInternal,
	ReasonRateLimited,
	ReasonBusy,
}

// latencyBuckets are the upper bounds, in seconds, of the request duration
// histogram: an issuance is a TokenReview round trip to the API server
// (about a millisecond on a quiet cluster) and about a millisecond of CPU.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}

// Metrics counts certificate requests. The zero value is ready to use and
// safe for concurrent use.
type Metrics struct {
	issued  atomic.Uint64
	refused [len(reasons)]atomic.Uint64
	latency admin.Histogram

	// IssuerNotAfter, if set, gives the issuer's expiry for a gauge.
	IssuerNotAfter func() time.Time
}

// Issued records a certificate issued after took.
func (m *Metrics) Issued(took time.Duration) {
	m.issued.Add(1)
	m.latency.Observe(latencyBuckets, took)
}

// Refused records a request refused for reason (a meshapi.Reason*) after
// took.
func (m *Metrics) Refused(reason string, took time.Duration) {
	for i, r := range reasons {
		if r == reason {
			m.refused[i].Add(1)
			break
		}
	}
	m.latency.Observe(latencyBuckets, took)
}

// IssuedCount and RefusedCount return the counters, for tests.
func (m *Metrics) IssuedCount() uint64 { return m.issued.Load() }
func (m *Metrics) RefusedCount(reason string) uint64 {
	for i, r := range reasons {
		if r == reason {
			return m.refused[i].Load()
		}
	}
	return 0
}

// WriteMetrics writes the series in the Prometheus text format.
func (m *Metrics) WriteMetrics(w io.Writer) error {
	pw := promtext.NewWriter(w)
	pw.Header("meshctl_controller_certificates_issued_total", promtext.Counter, "Workload certificates issued to proxies.")
	pw.SampleUint("meshctl_controller_certificates_issued_total", m.issued.Load())
	pw.Header("meshctl_controller_certificate_requests_refused_total", promtext.Counter, "Certificate requests refused, by reason: unauthenticated, wrong-audience, bad-request, wrong-identity, internal, rate-limited, busy.")
	for i, r := range reasons {
		pw.SampleUint("meshctl_controller_certificate_requests_refused_total", m.refused[i].Load(), "reason", r)
	}
	m.latency.Write(pw, latencyBuckets, "meshctl_controller_certificate_issuance_duration_seconds",
		"Time from receiving a certificate request to answering it, issued or refused; includes the TokenReview.")
	if m.IssuerNotAfter != nil {
		var secs int64
		if t := m.IssuerNotAfter(); !t.IsZero() {
			secs = t.Unix()
		}
		pw.Header("meshctl_controller_identity_issuer_expiry_timestamp_seconds", promtext.Gauge, "Expiry of the identity issuer in service (Unix time); 0 when none is loaded.")
		pw.SampleInt("meshctl_controller_identity_issuer_expiry_timestamp_seconds", secs)
	}
	return pw.Flush()
}
