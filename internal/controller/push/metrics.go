package push

import (
	"io"
	"sync/atomic"
	"time"

	"github.com/meshctl/mesh/internal/controller/admin"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/promtext"
)

// kinds are the label values of the per-kind series, in output order.
var kinds = [...]meshapi.Kind{meshapi.KindMesh, meshapi.KindBundle, meshapi.KindService, meshapi.KindEndpoints, meshapi.KindResolution}

// kindIndex maps a kind to its slot; unknown kinds (a proxy's NACK of
// something odd) share the last one, "other".
func kindIndex(k meshapi.Kind) int {
	for i, x := range kinds {
		if x == k {
			return i
		}
	}
	return len(kinds)
}

func kindLabel(i int) string {
	if i < len(kinds) {
		return string(kinds[i])
	}
	return "other"
}

// latencyBuckets are the upper bounds, in seconds, of the push latency:
// the debounce window alone is 10 to 100 ms.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Metrics are the push server's series. Safe for concurrent use.
type Metrics struct {
	proxies atomic.Int64
	pushes  [len(kinds) + 1]atomic.Uint64
	bytes   [len(kinds) + 1]atomic.Uint64
	nacks   [len(kinds) + 1]atomic.Uint64
	invalid [len(kinds) + 1]atomic.Uint64
	deltas  atomic.Uint64
	batches atomic.Uint64
	changes atomic.Uint64
	latency admin.Histogram
	// subscriptionsRefused counts subscriptions past a bound, by
	// refusedReasons.
	subscriptionsRefused [len(refusedReasons)]atomic.Uint64
	// streamsRefused counts streams past a bound, by streamReasons.
	streamsRefused [len(streamReasons)]atomic.Uint64
	// resolutions is a gauge of the Resolutions held, set by the server.
	resolutions atomic.Int64
}

// The reasons a subscription is ignored, indexes of refusedReasons.
const (
	refusedResources = iota
	refusedAddresses
	refusedAddressesTotal
)

var refusedReasons = [...]string{"resources-per-proxy", "addresses-per-proxy", "addresses-total"}

// The reasons a stream is refused, indexes of streamReasons.
const (
	streamPerIdentity = iota
	streamTotal
)

var streamReasons = [...]string{"per-identity", "total"}

func (m *Metrics) sent(k meshapi.Kind, n int, isDelta bool) {
	i := kindIndex(k)
	m.pushes[i].Add(1)
	m.bytes[i].Add(uint64(n))
	if isDelta {
		m.deltas.Add(1)
	}
}

func (m *Metrics) observeLatency(d time.Duration) {
	m.latency.Observe(latencyBuckets, d)
}

// Nacks returns the NACKs counted for kind.
func (m *Metrics) Nacks(k meshapi.Kind) uint64 { return m.nacks[kindIndex(k)].Load() }

// Pushes returns the messages sent of kind, and of those the deltas.
func (m *Metrics) Pushes(k meshapi.Kind) uint64 { return m.pushes[kindIndex(k)].Load() }

// Bytes returns the bytes sent of kind.
func (m *Metrics) Bytes(k meshapi.Kind) uint64 { return m.bytes[kindIndex(k)].Load() }

// Batches returns how many debounced batches were applied.
func (m *Metrics) Batches() uint64 { return m.batches.Load() }

// Proxies returns the connected proxies.
func (m *Metrics) Proxies() int64 { return m.proxies.Load() }

// MetricNames are the series WriteMetrics writes, for the docs test.
var MetricNames = []string{
	"meshctl_controller_push_proxies",
	"meshctl_controller_push_messages_total",
	"meshctl_controller_push_bytes_total",
	"meshctl_controller_push_endpoint_deltas_total",
	"meshctl_controller_push_nacks_total",
	"meshctl_controller_push_invalid_total",
	"meshctl_controller_push_debounce_batches_total",
	"meshctl_controller_push_subscriptions_refused_total",
	"meshctl_controller_push_streams_refused_total",
	"meshctl_controller_push_resolutions",
	"meshctl_controller_push_debounced_changes_total",
	"meshctl_controller_push_latency_seconds",
}

// WriteMetrics writes the series in the Prometheus text format.
func (m *Metrics) WriteMetrics(w io.Writer) error {
	pw := promtext.NewWriter(w)
	perKind := func(name, help string, vals *[len(kinds) + 1]atomic.Uint64) {
		pw.Header(name, promtext.Counter, help)
		for i := range vals {
			pw.SampleUint(name, vals[i].Load(), "kind", kindLabel(i))
		}
	}
	counter := func(name, help string, v uint64) {
		pw.Header(name, promtext.Counter, help)
		pw.SampleUint(name, v)
	}
	pw.Header("meshctl_controller_push_proxies", promtext.Gauge, "Proxies connected to the discovery stream.")
	pw.SampleInt("meshctl_controller_push_proxies", m.proxies.Load())
	perKind("meshctl_controller_push_messages_total", "Resource versions written to proxies, by kind (endpoint deltas count as Endpoints).", &m.pushes)
	perKind("meshctl_controller_push_bytes_total", "Bytes of resource versions written to proxies, by kind.", &m.bytes)
	counter("meshctl_controller_push_endpoint_deltas_total", "Endpoints versions written as a delta from the proxy's version instead of the whole set.", m.deltas.Load())
	perKind("meshctl_controller_push_nacks_total", "Resource versions proxies refused (NACK), by kind.", &m.nacks)
	perKind("meshctl_controller_push_invalid_total", "Resource versions the controller refused to send because they failed validation, by kind; proxies keep the last good one.", &m.invalid)
	counter("meshctl_controller_push_debounce_batches_total", "Batches of registry changes applied after the debounce window.", m.batches.Load())
	pw.Header("meshctl_controller_push_subscriptions_refused_total", promtext.Counter, "Subscriptions ignored because a bound was reached, by reason: resources-per-proxy, addresses-per-proxy, addresses-total.")
	for i, r := range refusedReasons {
		pw.SampleUint("meshctl_controller_push_subscriptions_refused_total", m.subscriptionsRefused[i].Load(), "reason", r)
	}
	pw.Header("meshctl_controller_push_streams_refused_total", promtext.Counter, "Discovery streams refused because a bound was reached, by reason: per-identity, total.")
	for i, r := range streamReasons {
		pw.SampleUint("meshctl_controller_push_streams_refused_total", m.streamsRefused[i].Load(), "reason", r)
	}
	pw.Header("meshctl_controller_push_resolutions", promtext.Gauge, "Address resolutions held because some connected proxy follows them.")
	pw.SampleInt("meshctl_controller_push_resolutions", m.resolutions.Load())
	counter("meshctl_controller_push_debounced_changes_total", "Registry changes received; divided by the batches, the changes per batch.", m.changes.Load())
	m.latency.Write(pw, latencyBuckets, "meshctl_controller_push_latency_seconds",
		"Time from a change reaching the push server to a proxy's ACK of the version that carries it.")
	return pw.Flush()
}
