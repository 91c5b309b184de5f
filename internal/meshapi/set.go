package meshapi

import (
	"errors"
	"fmt"
	"maps"
)

// Set is what a proxy holds at one moment: the mesh settings, the bundle,
// and the services it subscribed to with their endpoints, each with the
// version it came with. A Set is never changed: Apply returns a new one
// that shares what did not change, so a proxy can compile it while the
// next update is already being applied.
//
// The file configuration of local mode and tests builds a Set too, so the
// proxy compiles one model whatever its source.
type Set struct {
	Mesh          MeshSettings
	MeshVersion   uint64
	Bundle        Bundle
	BundleVersion uint64
	// Services are keyed by "namespace/name".
	Services map[string]*ServiceState
	// Resolutions are keyed by address; a resolution to "" records that
	// no service owns the address.
	Resolutions map[string]Resolution
}

// ServiceState is one service with its endpoints.
type ServiceState struct {
	Service          *Service
	ServiceVersion   uint64
	Endpoints        []Endpoint
	EndpointsVersion uint64
}

// ErrDeltaBase is wrapped by Apply when an endpoint delta does not start
// from the version the set holds; the proxy NACKs it and the controller
// sends the whole set.
var ErrDeltaBase = errors.New("delta does not start from the version held")

// Apply returns the set with m applied; s itself is unchanged. An error
// leaves nothing applied: the caller keeps s and NACKs m.
func (s *Set) Apply(m *ServerMessage) (*Set, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	n := *s
	switch m.Kind {
	case KindMesh:
		n.Mesh, n.MeshVersion = *m.Mesh, m.Version
	case KindBundle:
		n.Bundle, n.BundleVersion = *m.Bundle, m.Version
	case KindResolution:
		n.Resolutions = maps.Clone(s.Resolutions)
		if n.Resolutions == nil {
			n.Resolutions = map[string]Resolution{}
		}
		n.Resolutions[m.Name] = *m.Resolution
	case KindService, KindEndpoints:
		n.Services = maps.Clone(s.Services)
		if n.Services == nil {
			n.Services = map[string]*ServiceState{}
		}
		var st ServiceState
		if old := s.Services[m.Name]; old != nil {
			st = *old
		}
		if err := st.apply(m); err != nil {
			return nil, fmt.Errorf("%s %q version %d: %w", m.Kind, m.Name, m.Version, err)
		}
		if st.Service == nil && st.Endpoints == nil {
			delete(n.Services, m.Name)
		} else {
			n.Services[m.Name] = &st
		}
	default:
		return nil, fmt.Errorf("unknown kind %q", m.Kind)
	}
	return &n, nil
}

func (st *ServiceState) apply(m *ServerMessage) error {
	switch {
	case m.Kind == KindService && m.Removed:
		st.Service, st.ServiceVersion = nil, m.Version
	case m.Kind == KindService:
		st.Service, st.ServiceVersion = m.Service, m.Version
	case m.Removed:
		st.Endpoints, st.EndpointsVersion = nil, m.Version
	case m.Endpoints != nil:
		st.Endpoints, st.EndpointsVersion = m.Endpoints.Endpoints, m.Version
	default:
		d := m.EndpointsDelta
		if d.Base != st.EndpointsVersion {
			return fmt.Errorf("%w: base %d, held %d", ErrDeltaBase, d.Base, st.EndpointsVersion)
		}
		st.Endpoints, st.EndpointsVersion = applyDelta(st.Endpoints, d), m.Version
	}
	return nil
}

// applyDelta returns a new slice: the held one may be shared with an
// older set.
func applyDelta(held []Endpoint, d *EndpointsDelta) []Endpoint {
	drop := make(map[string]bool, len(d.Remove)+len(d.Upsert))
	for _, a := range d.Remove {
		drop[a] = true
	}
	for _, e := range d.Upsert {
		drop[e.Address] = true
	}
	out := make([]Endpoint, 0, len(held)+len(d.Upsert))
	for _, e := range held {
		if !drop[e.Address] {
			out = append(out, e)
		}
	}
	return append(out, d.Upsert...)
}
