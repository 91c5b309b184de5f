package discovery

import (
	"slices"
	"strings"
	"time"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// State returns the client's state for the admin API.
func (c *Client) State() adminapi.Discovery {
	set := c.set.Load()
	c.mu.Lock()
	d := adminapi.Discovery{
		APIVersion:      adminapi.APIVersion,
		Controller:      c.opts.Bootstrap.Address,
		Connected:       c.st.connected,
		ConnectedSince:  utc(c.st.connectedSince),
		LastUpdate:      utc(c.st.lastUpdate),
		Reconnects:      max(c.st.opened, 1) - 1,
		LastStreamError: c.st.lastStreamError,
		NACKsTotal:      c.st.nacks,
		LastNACK:        c.st.lastNACK,
	}
	if !d.Connected {
		d.ConnectedSince = time.Time{}
	}
	for a := range c.addrs {
		if _, ok := answer(c.compiled, a); !ok {
			d.PendingAddresses = append(d.PendingAddresses, a)
		}
	}
	c.mu.Unlock()
	slices.Sort(d.PendingAddresses)
	d.Resources = resources(set)
	return d
}

// resources lists what a Set holds, sorted by kind and name.
func resources(s *meshapi.Set) []adminapi.Resource {
	out := []adminapi.Resource{}
	if s.MeshVersion != 0 {
		out = append(out, adminapi.Resource{Kind: string(meshapi.KindMesh), Version: s.MeshVersion})
	}
	if s.BundleVersion != 0 {
		out = append(out, adminapi.Resource{Kind: string(meshapi.KindBundle), Version: s.BundleVersion})
	}
	for name, st := range s.Services {
		if st.Service != nil {
			out = append(out, adminapi.Resource{Kind: string(meshapi.KindService), Name: name, Version: st.ServiceVersion})
		}
		if st.EndpointsVersion != 0 {
			out = append(out, adminapi.Resource{Kind: string(meshapi.KindEndpoints), Name: name, Version: st.EndpointsVersion})
		}
	}
	for name := range s.Resolutions {
		// Resolutions carry no version in the Set; 0 says "held".
		out = append(out, adminapi.Resource{Kind: string(meshapi.KindResolution), Name: name})
	}
	slices.SortFunc(out, func(a, b adminapi.Resource) int {
		if c := strings.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// Gauges returns the client's series for /metrics.
func (c *Client) Gauges() []metrics.Gauge {
	d := c.State()
	connected, last := 0.0, 0.0
	if d.Connected {
		connected = 1
	}
	if !d.LastUpdate.IsZero() {
		last = float64(d.LastUpdate.Unix())
	}
	return []metrics.Gauge{
		{Name: "meshproxy_discovery_connected", Help: "1 while the discovery stream to the controller is open.", Value: connected},
		{Name: "meshproxy_discovery_reconnects_total", Help: "Discovery streams opened after the first.", Type: "counter", Value: float64(d.Reconnects)},
		{Name: "meshproxy_discovery_nacks_total", Help: "Resource versions the proxy refused.", Type: "counter", Value: float64(d.NACKsTotal)},
		{Name: "meshproxy_discovery_last_update_timestamp_seconds", Help: "When a resource version was last applied, Unix seconds; 0 before the first.", Value: last},
		{Name: "meshproxy_discovery_resources", Help: "Resources held.", Value: float64(len(d.Resources))},
		{Name: "meshproxy_discovery_pending_addresses", Help: "Addresses subscribed on demand and not answered yet.", Value: float64(len(d.PendingAddresses))},
	}
}
