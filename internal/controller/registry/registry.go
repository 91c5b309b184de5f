// Package registry is where the controller learns which services exist and
// which endpoints serve them. A Registry turns its source (the Kubernetes
// API, a directory of files for local mode, later other clusters) into
// meshapi values and hands them to a Sink, so that the push server does not
// know where they came from.
//
// Every implementation suppresses no-ops: it compares the meshapi values it
// derives, not the source objects, and calls the Sink only when what a
// proxy would receive changed. An annotation-only Pod update, a status-only
// Service update or an informer resync costs no push.
package registry

import (
	"context"
	"slices"
	"strings"

	"github.com/meshctl/mesh/internal/meshapi"
)

// Sink receives the registry's changes. Keys are "namespace/name". A
// registry calls it from one goroutine, in the order of its changes, and
// never changes a value after handing it over, so a Sink may keep them.
type Sink interface {
	// UpsertService adds or replaces a service.
	UpsertService(key string, svc *meshapi.Service)
	// RemoveService says the service no longer exists.
	RemoveService(key string)
	// UpsertEndpoints replaces the serving endpoints of a service, sorted
	// by address; an empty slice means none serves.
	UpsertEndpoints(key string, eps []meshapi.Endpoint)
	// RemoveEndpoints says the service, and so its endpoints, is gone.
	RemoveEndpoints(key string)
}

// Registry is one source of services and endpoints.
type Registry interface {
	// Run delivers the current state to sink and then every change, until
	// ctx is done. It returns nil then, or an error that makes the
	// registry unusable.
	Run(ctx context.Context, sink Sink) error
	// Synced returns nil once the initial state was delivered, else why
	// not yet; the controller is not ready before.
	Synced() error
}

// Key returns the "namespace/name" of a service.
func Key(namespace, name string) string { return namespace + "/" + name }

// entry is what a registry last told the Sink about one service.
type entry struct {
	svc *meshapi.Service
	eps []meshapi.Endpoint // nil: not told yet
}

// emitter remembers what the Sink was told and tells it only changes.
type emitter struct {
	sink Sink
	last map[string]entry
}

func newEmitter(sink Sink) *emitter { return &emitter{sink: sink, last: map[string]entry{}} }

// set makes the sink hold svc and eps for key (svc nil: the service is
// gone). It returns whether anything was sent.
func (e *emitter) set(key string, svc *meshapi.Service, eps []meshapi.Endpoint) bool {
	old, had := e.last[key]
	if svc == nil {
		if !had {
			return false
		}
		delete(e.last, key)
		e.sink.RemoveEndpoints(key)
		e.sink.RemoveService(key)
		return true
	}
	if eps == nil {
		eps = []meshapi.Endpoint{}
	}
	changed := false
	if !had || !EqualService(old.svc, svc) {
		e.sink.UpsertService(key, svc)
		changed = true
	}
	if !had || !EqualEndpoints(old.eps, eps) {
		e.sink.UpsertEndpoints(key, eps)
		changed = true
	}
	e.last[key] = entry{svc: svc, eps: eps}
	return changed
}

// keys returns the keys the sink holds.
func (e *emitter) keys() []string {
	out := make([]string, 0, len(e.last))
	for k := range e.last {
		out = append(out, k)
	}
	return out
}

// EqualService reports whether two services would reach a proxy as the
// same resource.
func EqualService(a, b *meshapi.Service) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Namespace == b.Namespace && a.Name == b.Name &&
		slices.Equal(a.Addresses, b.Addresses) && slices.Equal(a.Ports, b.Ports)
}

// EqualEndpoints reports whether two endpoint lists, both sorted by
// address, are the same.
func EqualEndpoints(a, b []meshapi.Endpoint) bool {
	return slices.EqualFunc(a, b, EqualEndpoint)
}

// EqualEndpoint compares every field of two endpoints.
func EqualEndpoint(a, b meshapi.Endpoint) bool {
	if a.Address != b.Address || a.Weight != b.Weight || a.Zone != b.Zone || a.Meshed != b.Meshed ||
		a.Identity != b.Identity || a.Terminating != b.Terminating || a.Pod != b.Pod || len(a.Ports) != len(b.Ports) {
		return false
	}
	for k, v := range a.Ports {
		if w, ok := b.Ports[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// SortEndpoints orders endpoints by address, the order Sink expects.
func SortEndpoints(eps []meshapi.Endpoint) {
	slices.SortFunc(eps, func(a, b meshapi.Endpoint) int { return strings.Compare(a.Address, b.Address) })
}
