package identity

import (
	"encoding/hex"
	"maps"
	"time"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// State returns the identity's metadata for the admin API. It holds no key
// material: only the certificate's public fields and the renewal counters.
func (id *Identity) State() adminapi.Identity {
	s := adminapi.Identity{APIVersion: adminapi.APIVersion, Identity: id.id}
	if c := id.cert.Load(); c != nil {
		s.SerialNumber = c.Leaf.SerialNumber.Text(16)
		s.NotBefore, s.NotAfter = c.Leaf.NotBefore.UTC(), c.Leaf.NotAfter.UTC()
		s.IssuerKeyID = hex.EncodeToString(c.Leaf.AuthorityKeyId)
		s.Ready = id.current() != nil
	}
	id.mu.Lock()
	s.RenewAt = utc(id.state.renewAt)
	s.LastRenewal = utc(id.state.lastRenewal)
	s.ConsecutiveFailures = id.state.consecutiveFailures
	s.LastError = id.state.lastError
	s.RenewalsTotal = id.state.renewals
	if len(id.state.failures) > 0 {
		s.FailuresTotal = maps.Clone(id.state.failures)
	}
	id.mu.Unlock()
	t := id.trust.load()
	s.Trust = adminapi.Trust{TrustDomain: t.bundle.TrustDomain, Version: t.version, Anchors: []adminapi.Anchor{}}
	for _, a := range t.anchors {
		s.Trust.Anchors = append(s.Trust.Anchors, adminapi.Anchor{Subject: a.Subject.String(), NotAfter: a.NotAfter.UTC(), KeyID: hex.EncodeToString(a.SubjectKeyId)})
	}
	return s
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

func unixOrZero(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.Unix())
}

// FailureReasons are the values of the reason label, every one exported
// from the start so that a rate over them is defined.
var FailureReasons = []string{
	meshapi.ReasonUnauthenticated, meshapi.ReasonWrongAudience, meshapi.ReasonBadRequest,
	meshapi.ReasonWrongIdentity, meshapi.ReasonInternal, meshapi.ReasonRateLimited, meshapi.ReasonBusy,
	ReasonUnreachable, ReasonToken, ReasonInvalidResponse, ReasonUnknown,
}

// Gauges returns the identity's series for /metrics.
func (id *Identity) Gauges() []metrics.Gauge {
	s := id.State()
	ready := 0.0
	if s.Ready {
		ready = 1
	}
	g := []metrics.Gauge{
		{Name: "meshproxy_identity_ready", Help: "1 while a valid mesh certificate is held.", Value: ready},
		{Name: "meshproxy_identity_cert_expiry_timestamp_seconds", Help: "NotAfter of the mesh certificate held, Unix seconds; 0 before the first.", Value: unixOrZero(s.NotAfter)},
		{Name: "meshproxy_identity_renewals_total", Help: "Mesh certificates obtained.", Type: "counter", Value: float64(s.RenewalsTotal)},
		{Name: "meshproxy_identity_consecutive_failures", Help: "Failed certificate requests since the last success.", Value: float64(s.ConsecutiveFailures)},
	}
	for _, r := range FailureReasons {
		g = append(g, metrics.Gauge{
			Name: "meshproxy_identity_renewal_failures_total", Help: "Failed certificate requests, by reason.", Type: "counter",
			Labels: [][2]string{{"reason", r}}, Value: float64(s.FailuresTotal[r]),
		})
	}
	return g
}
