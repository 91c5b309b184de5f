package identity

import (
	"bufio"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/controller/admin"
	"github.com/meshctl/mesh/internal/meshapi"
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
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "# HELP meshctl_controller_certificates_issued_total Workload certificates issued to proxies.")
	fmt.Fprintln(bw, "# TYPE meshctl_controller_certificates_issued_total counter")
	fmt.Fprintf(bw, "meshctl_controller_certificates_issued_total %d\n", m.issued.Load())
	fmt.Fprintln(bw, "# HELP meshctl_controller_certificate_requests_refused_total Certificate requests refused, by reason: unauthenticated, wrong-audience, bad-request, wrong-identity, internal, rate-limited, busy.")
	fmt.Fprintln(bw, "# TYPE meshctl_controller_certificate_requests_refused_total counter")
	for i, r := range reasons {
		fmt.Fprintf(bw, "meshctl_controller_certificate_requests_refused_total{reason=%q} %d\n", r, m.refused[i].Load())
	}
	m.latency.Write(bw, latencyBuckets, "meshctl_controller_certificate_issuance_duration_seconds",
		"Time from receiving a certificate request to answering it, issued or refused; includes the TokenReview.")
	if m.IssuerNotAfter != nil {
		var secs int64
		if t := m.IssuerNotAfter(); !t.IsZero() {
			secs = t.Unix()
		}
		fmt.Fprintln(bw, "# HELP meshctl_controller_identity_issuer_expiry_timestamp_seconds Expiry of the identity issuer in service (Unix time); 0 when none is loaded.")
		fmt.Fprintln(bw, "# TYPE meshctl_controller_identity_issuer_expiry_timestamp_seconds gauge")
		fmt.Fprintf(bw, "meshctl_controller_identity_issuer_expiry_timestamp_seconds %d\n", secs)
	}
	return bw.Flush()
}
