// Package push is the controller's discovery stream server: it holds the
// current version of every resource proxies can subscribe to (mesh
// settings, trust bundle, services, endpoints, address resolutions) and
// streams them to connected proxies over meshapi.PathDiscovery.
//
// Every resource has its own version, drawn from one controller-wide
// counter, and each version is encoded once: the same bytes go to every
// subscriber. Changes from the registry are debounced (Debounce after the
// last one, at most MaxDelay after the first) and applied as one batch.
// An endpoints change is also encoded as an EndpointsDelta from the
// previous version, sent to the subscribers that hold that version when it
// is smaller than the whole set.
//
// A subscriber never holds the others back: the server only marks which
// resources it is behind on, and the subscriber's own goroutine writes the
// newest version of each when its stream can take it. A slow proxy thus
// skips versions instead of queueing them, and its memory is bounded by
// the number of resources it subscribed to.
package push

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/meshctl/mesh/internal/controller/registry"
	"github.com/meshctl/mesh/internal/meshapi"
)

// Defaults of the debounce window.
const (
	DefaultDebounce = 10 * time.Millisecond
	DefaultMaxDelay = 100 * time.Millisecond
)

// Options configure a Server. Logger is required.
type Options struct {
	Logger *slog.Logger
	// Mesh and Bundle deliver the mesh settings and the trust bundle; each
	// value received replaces the previous one for every proxy. A value
	// that fails validation is logged and counted, and the last good one
	// stays in service. Nil channels: proxies get none.
	Mesh   <-chan meshapi.MeshSettings
	Bundle <-chan meshapi.Bundle
	// Debounce and MaxDelay bound the batching of registry changes;
	// zero means DefaultDebounce and DefaultMaxDelay.
	Debounce time.Duration
	MaxDelay time.Duration
	// Now is the clock of latencies and of the debounce window; nil means
	// time.Now.
	Now func() time.Time
	// MaxResourcesPerProxy bounds the resources one proxy may follow;
	// zero means DefaultMaxResourcesPerProxy.
	MaxResourcesPerProxy int
	// WriteTimeout bounds one write to a proxy; zero means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxStreams and MaxStreamsPerIdentity bound the discovery streams
	// open at once, in total and per proxy identity (SPIFFE id); zero
	// means DefaultMaxStreams and DefaultMaxStreamsPerIdentity.
	MaxStreams            int
	MaxStreamsPerIdentity int
	// HelloTimeout bounds the wait for a stream's hello; zero means
	// DefaultHelloTimeout.
	HelloTimeout time.Duration
	// MaxAddressesPerProxy bounds the addresses one proxy may follow, and
	// MaxAddressSubscriptions the addresses followed by all proxies
	// together (one address followed by two proxies counts twice); zero
	// means the Default* values.
	MaxAddressesPerProxy    int
	MaxAddressSubscriptions int
}

// Defaults of the stream and subscription bounds. A stream costs the
// controller about 40 KB (its HTTP/2 connection, TLS state and buffers)
// and an address subscription about 800 bytes when no other proxy follows
// the address (its Resolution, encoded, and the proxy's state of it). Pods of one Deployment share their
// ServiceAccount and so their identity: a workload of more replicas than
// MaxStreamsPerIdentity needs the bound raised.
const (
	DefaultMaxStreams              = 20000
	DefaultMaxStreamsPerIdentity   = 5000
	DefaultHelloTimeout            = 10 * time.Second
	DefaultMaxAddressesPerProxy    = 10000
	DefaultMaxAddressSubscriptions = 200000
)

// DefaultWriteTimeout is how long a write to a proxy may block. A proxy
// that reads nothing for that long (its stream's flow-control window full)
// is disconnected, so that it does not hold the stream's goroutines and
// pending bytes for ever; it reconnects and gets the newest versions.
const DefaultWriteTimeout = 30 * time.Second

// DefaultMaxResourcesPerProxy bounds what one proxy may subscribe to:
// services by name (with their endpoints) and addresses it asked about.
// Without it, a proxy that subscribes without end would grow the
// controller's memory without end. The proxy's own client stops at 10,000
// addresses, each of which brings at most three resources.
const DefaultMaxResourcesPerProxy = 32768

// resKey names one resource.
type resKey struct {
	kind meshapi.Kind
	name string
}

var (
	meshKey   = resKey{meshapi.KindMesh, ""}
	bundleKey = resKey{meshapi.KindBundle, ""}
)

// resource is one version of one resource. It is never changed once
// stored; a change stores a new one.
type resource struct {
	version uint64
	full    []byte
	// delta, when set, turns version deltaBase into this version, and is
	// smaller than full.
	delta     []byte
	deltaBase uint64
	// changed is when the change that made this version reached the
	// server, for the push latency.
	changed time.Time
	removed bool

	svc        *meshapi.Service   // KindService
	eps        []meshapi.Endpoint // KindEndpoints: the base of the next delta
	resolution string             // KindResolution: the owning service
}

// change is a registry change waiting for the debounce window to close.
type change struct {
	svc     *meshapi.Service
	eps     []meshapi.Endpoint
	removed bool
	at      time.Time
}

// Server holds the resources and the subscribers. It is a registry.Sink.
type Server struct {
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	metrics *Metrics
	done    chan struct{}

	pmu      sync.Mutex
	pending  map[resKey]change
	debounce debouncer
	kick     chan struct{}

	mu        sync.RWMutex
	version   uint64
	resources map[resKey]*resource
	// byAddress maps "ip:port" of every service port to its service.
	byAddress map[string]string
	watchers  map[resKey]map[*subscriber]struct{}
	subs      map[*subscriber]struct{}
	// addrSubs counts the addresses followed, over all proxies.
	addrSubs int

	smu         sync.Mutex
	streams     int            // open, hello pending or not
	streamsByID map[string]int // open, by proxy identity
}

var _ registry.Sink = (*Server)(nil)

// New returns a Server; Run must run for registry changes to be applied.
func New(opts Options) *Server {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.MaxResourcesPerProxy <= 0 {
		opts.MaxResourcesPerProxy = DefaultMaxResourcesPerProxy
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = DefaultMaxStreams
	}
	if opts.MaxStreamsPerIdentity <= 0 {
		opts.MaxStreamsPerIdentity = DefaultMaxStreamsPerIdentity
	}
	if opts.HelloTimeout <= 0 {
		opts.HelloTimeout = DefaultHelloTimeout
	}
	if opts.MaxAddressesPerProxy <= 0 {
		opts.MaxAddressesPerProxy = DefaultMaxAddressesPerProxy
	}
	if opts.MaxAddressSubscriptions <= 0 {
		opts.MaxAddressSubscriptions = DefaultMaxAddressSubscriptions
	}
	return &Server{
		opts: opts, log: opts.Logger, now: opts.Now, metrics: &Metrics{}, done: make(chan struct{}),
		pending:   map[resKey]change{},
		debounce:  debouncer{quiet: opts.Debounce, max: opts.MaxDelay},
		kick:      make(chan struct{}, 1),
		resources: map[resKey]*resource{}, byAddress: map[string]string{},
		watchers: map[resKey]map[*subscriber]struct{}{}, subs: map[*subscriber]struct{}{},
		streamsByID: map[string]int{},
	}
}

// Metrics returns the server's metrics, for the admin endpoint.
func (s *Server) Metrics() *Metrics { return s.metrics }

// UpsertService implements registry.Sink.
func (s *Server) UpsertService(key string, svc *meshapi.Service) {
	s.enqueue(resKey{meshapi.KindService, key}, change{svc: svc})
}

// RemoveService implements registry.Sink.
func (s *Server) RemoveService(key string) {
	s.enqueue(resKey{meshapi.KindService, key}, change{removed: true})
}

// UpsertEndpoints implements registry.Sink.
func (s *Server) UpsertEndpoints(key string, eps []meshapi.Endpoint) {
	s.enqueue(resKey{meshapi.KindEndpoints, key}, change{eps: eps})
}

// RemoveEndpoints implements registry.Sink.
func (s *Server) RemoveEndpoints(key string) {
	s.enqueue(resKey{meshapi.KindEndpoints, key}, change{removed: true})
}

func (s *Server) enqueue(k resKey, c change) {
	now := s.now()
	s.pmu.Lock()
	c.at = now
	if old, ok := s.pending[k]; ok {
		c.at = old.at // latency counts from the first change of the batch
	}
	s.pending[k] = c
	s.debounce.add(now)
	s.pmu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run applies registry changes in debounced batches and the mesh settings
// and bundle as they come, until ctx is done; then every stream ends.
func (s *Server) Run(ctx context.Context) error {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	mesh, bundle := s.opts.Mesh, s.opts.Bundle
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		case <-timer.C:
		case m, ok := <-mesh:
			if !ok {
				mesh = nil
				continue
			}
			s.setGlobal(meshKey, &meshapi.ServerMessage{Kind: meshapi.KindMesh, Mesh: &m})
			continue
		case b, ok := <-bundle:
			if !ok {
				bundle = nil
				continue
			}
			s.setGlobal(bundleKey, &meshapi.ServerMessage{Kind: meshapi.KindBundle, Bundle: &b})
			continue
		}
		s.pmu.Lock()
		now := s.now()
		if !s.debounce.due(now) {
			if d := s.debounce.deadline(); !d.IsZero() {
				timer.Reset(d.Sub(now))
			}
			s.pmu.Unlock()
			continue
		}
		batch := s.pending
		s.pending = make(map[resKey]change, len(batch))
		n := s.debounce.reset(now)
		s.pmu.Unlock()
		s.metrics.batches.Add(1)
		s.metrics.changes.Add(uint64(n))
		s.apply(batch)
	}
}

// Flush applies pending registry changes now, without waiting for the
// debounce window; for tests and benchmarks that feed the Sink directly.
func (s *Server) Flush() {
	s.pmu.Lock()
	batch := s.pending
	s.pending = map[resKey]change{}
	n := s.debounce.reset(s.now())
	s.pmu.Unlock()
	if len(batch) > 0 {
		s.metrics.batches.Add(1)
		s.metrics.changes.Add(uint64(n))
		s.apply(batch)
	}
}

// setGlobal stores a new version of the mesh settings or the bundle and
// marks it for every subscriber.
func (s *Server) setGlobal(k resKey, m *meshapi.ServerMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.encode(m, s.now())
	if err != nil {
		s.log.Error("refusing a resource that does not validate; proxies keep the last good one", "kind", k.kind, "error", err)
		s.metrics.invalid[kindIndex(k.kind)].Add(1)
		return
	}
	s.resources[k] = r
	for sub := range s.subs {
		sub.mark(k, false)
	}
}

// encode gives m the next version, validates it and encodes it. It must
// be called with mu held.
func (s *Server) encode(m *meshapi.ServerMessage, changed time.Time) (*resource, error) {
	m.Version = s.version + 1
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := meshapi.Encode(m)
	if err != nil {
		return nil, err
	}
	s.version++
	return &resource{version: m.Version, full: b, changed: changed, removed: m.Removed}, nil
}

// apply turns a batch of registry changes into new resource versions and
// marks them for their subscribers.
func (s *Server) apply(batch map[resKey]change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := make([]resKey, 0, len(batch))
	addrs := map[string]bool{} // "ip:port" whose owner may have changed
	// In sending order, so that versions grow in the order a proxy
	// applies them: a service before its endpoints.
	for _, k := range sortedKeys(batch) {
		c := batch[k]
		old := s.resources[k]
		var r *resource
		var err error
		switch {
		case c.removed:
			if old == nil || old.removed {
				continue
			}
			r, err = s.encode(&meshapi.ServerMessage{Kind: k.kind, Name: k.name, Removed: true}, c.at)
		case k.kind == meshapi.KindService:
			if old != nil && !old.removed && registry.EqualService(old.svc, c.svc) {
				continue
			}
			r, err = s.encode(&meshapi.ServerMessage{Kind: k.kind, Name: k.name, Service: c.svc}, c.at)
			if err == nil {
				r.svc = c.svc
			}
		default:
			if old != nil && !old.removed && registry.EqualEndpoints(old.eps, c.eps) {
				continue
			}
			r, err = s.encodeEndpoints(k.name, old, c)
		}
		if err != nil {
			s.log.Error("refusing a resource that does not validate; proxies keep the last good one", "kind", k.kind, "name", k.name, "error", err)
			s.metrics.invalid[kindIndex(k.kind)].Add(1)
			continue
		}
		if k.kind == meshapi.KindService {
			var oldSvc *meshapi.Service
			if old != nil {
				oldSvc = old.svc
			}
			s.index(k.name, oldSvc, r.svc, addrs)
		}
		s.resources[k] = r
		changed = append(changed, k)
	}
	for a := range addrs {
		if k, ok := s.resolve(a, time.Time{}); ok {
			changed = append(changed, k)
		}
	}
	for _, k := range changed {
		for sub := range s.watchers[k] {
			sub.mark(k, false)
		}
	}
}

// encodeEndpoints encodes the new endpoints in full and, when the old
// version is there and the delta is smaller, as a delta.
func (s *Server) encodeEndpoints(name string, old *resource, c change) (*resource, error) {
	r, err := s.encode(&meshapi.ServerMessage{Kind: meshapi.KindEndpoints, Name: name, Endpoints: &meshapi.Endpoints{Endpoints: c.eps}}, c.at)
	if err != nil {
		return nil, err
	}
	r.eps = c.eps
	if old == nil || old.removed {
		return r, nil
	}
	up, rm := delta(old.eps, c.eps)
	d, err := meshapi.Encode(&meshapi.ServerMessage{Kind: meshapi.KindEndpoints, Name: name, Version: r.version,
		EndpointsDelta: &meshapi.EndpointsDelta{Base: old.version, Upsert: up, Remove: rm}})
	if err == nil && len(d) < len(r.full) {
		r.delta, r.deltaBase = d, old.version
	}
	return r, nil
}

// index moves a service's addresses in byAddress and collects those that
// changed owner or ports.
func (s *Server) index(name string, old, new *meshapi.Service, touched map[string]bool) {
	for _, a := range serviceAddrs(old) {
		if s.byAddress[a] == name {
			delete(s.byAddress, a)
		}
		touched[a] = true
	}
	for _, a := range serviceAddrs(new) {
		s.byAddress[a] = name
		touched[a] = true
	}
}

func serviceAddrs(svc *meshapi.Service) []string {
	if svc == nil {
		return nil
	}
	out := make([]string, 0, len(svc.Addresses)*len(svc.Ports))
	for _, ip := range svc.Addresses {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		for _, p := range svc.Ports {
			out = append(out, netip.AddrPortFrom(a, p.Port).String())
		}
	}
	return out
}

// resolve brings the Resolution of address up to date if some proxy asked
// for it (or create is set, with the time of asking), and reports whether
// it got a new version. It must be called with mu held.
func (s *Server) resolve(address string, create time.Time) (resKey, bool) {
	k := resKey{meshapi.KindResolution, address}
	old := s.resources[k]
	if old == nil && create.IsZero() {
		return k, false
	}
	owner := s.byAddress[address]
	if old != nil && old.resolution == owner {
		return k, false
	}
	at := create
	if at.IsZero() {
		at = s.now()
	}
	r, err := s.encode(&meshapi.ServerMessage{Kind: meshapi.KindResolution, Name: address,
		Resolution: &meshapi.Resolution{Address: address, Service: owner}}, at)
	if err != nil {
		s.log.Error("encoding a resolution", "address", address, "error", err)
		return k, false
	}
	r.resolution = owner
	if old == nil {
		s.metrics.resolutions.Add(1)
	}
	s.resources[k] = r
	if owner != "" {
		// Whoever follows this address now follows its service.
		for sub := range s.watchers[k] {
			s.watchLocked(sub, resKey{meshapi.KindService, owner}, resKey{meshapi.KindEndpoints, owner})
		}
	}
	return k, true
}

// canonicalAddress returns "ip:port" in the form byAddress uses.
func canonicalAddress(a string) (string, error) {
	ap, err := netip.ParseAddrPort(a)
	if err != nil {
		return "", errors.New("not an address and port: " + strconv.Quote(a))
	}
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()).String(), nil
}

// subscribe adds a proxy's subscriptions and marks what it must receive.
func (s *Server) subscribe(sub *subscriber, sn *meshapi.Subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[sub]; !ok {
		return // the stream ended while its last message was read
	}
	full := func() bool {
		if sub.following() < s.opts.MaxResourcesPerProxy {
			return false
		}
		s.metrics.subscriptionsRefused[refusedResources].Add(1)
		sub.log.Warn("ignoring a subscription: the proxy follows as many resources as it may", "max", s.opts.MaxResourcesPerProxy)
		return true
	}
	for _, name := range sn.Services {
		if full() {
			return
		}
		s.watchLocked(sub, resKey{meshapi.KindService, name}, resKey{meshapi.KindEndpoints, name})
	}
	for _, a := range sn.Addresses {
		addr, err := canonicalAddress(a)
		if err != nil {
			sub.log.Warn("ignoring a subscription", "error", err)
			continue
		}
		if full() {
			return
		}
		if !sub.follows(resKey{meshapi.KindResolution, addr}) && !s.addressRoom(sub) {
			continue
		}
		k, _ := s.resolve(addr, s.now())
		s.watchLocked(sub, k)
		if owner := s.resources[k].resolution; owner != "" {
			s.watchLocked(sub, resKey{meshapi.KindService, owner}, resKey{meshapi.KindEndpoints, owner})
		}
	}
}

// addressRoom reports whether sub may follow one more address, and counts
// and logs the subscription it ignores when not. mu must be held.
func (s *Server) addressRoom(sub *subscriber) bool {
	switch {
	case sub.addresses >= s.opts.MaxAddressesPerProxy:
		s.metrics.subscriptionsRefused[refusedAddresses].Add(1)
		sub.log.Warn("ignoring a subscription by address: the proxy follows as many addresses as it may", "max", s.opts.MaxAddressesPerProxy)
		return false
	case s.addrSubs >= s.opts.MaxAddressSubscriptions:
		s.metrics.subscriptionsRefused[refusedAddressesTotal].Add(1)
		sub.log.Warn("ignoring a subscription by address: the proxies follow as many addresses as the controller holds", "max", s.opts.MaxAddressSubscriptions)
		return false
	}
	return true
}

// watchLocked makes sub follow keys; mu must be held.
func (s *Server) watchLocked(sub *subscriber, keys ...resKey) {
	for _, k := range keys {
		w := s.watchers[k]
		if w == nil {
			w = map[*subscriber]struct{}{}
			s.watchers[k] = w
		}
		if _, ok := w[sub]; ok {
			continue
		}
		w[sub] = struct{}{}
		sub.follow(k)
		if k.kind == meshapi.KindResolution {
			sub.addresses++
			s.addrSubs++
		}
		if _, ok := s.resources[k]; ok {
			sub.mark(k, false)
		}
	}
}

// unsubscribe removes subscriptions by service name or address.
func (s *Server) unsubscribe(sub *subscriber, sn *meshapi.Subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []resKey
	for _, name := range sn.Services {
		keys = append(keys, resKey{meshapi.KindService, name}, resKey{meshapi.KindEndpoints, name})
	}
	for _, a := range sn.Addresses {
		if addr, err := canonicalAddress(a); err == nil {
			keys = append(keys, resKey{meshapi.KindResolution, addr})
		}
	}
	s.unwatchLocked(sub, keys)
}

// unwatchLocked makes sub stop following keys; mu must be held. A
// Resolution that no proxy follows any more is dropped: proxies never
// unsubscribe an address, so without that every address any proxy ever
// asked about would be held for ever. Asked again, it gets a new version.
func (s *Server) unwatchLocked(sub *subscriber, keys []resKey) {
	for _, k := range keys {
		w := s.watchers[k]
		if _, ok := w[sub]; !ok {
			sub.unfollow(k)
			continue
		}
		delete(w, sub)
		if k.kind == meshapi.KindResolution {
			sub.addresses--
			s.addrSubs--
		}
		if len(w) == 0 {
			delete(s.watchers, k)
			if _, held := s.resources[k]; held && k.kind == meshapi.KindResolution {
				delete(s.resources, k)
				s.metrics.resolutions.Add(-1)
			}
		}
		sub.unfollow(k)
	}
}

// connect registers a new stream; the mesh settings and the bundle are
// due at once.
func (s *Server) connect(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs[sub] = struct{}{}
	sub.follow(meshKey)
	sub.follow(bundleKey)
	for _, k := range []resKey{meshKey, bundleKey} {
		if _, ok := s.resources[k]; ok {
			sub.mark(k, false)
		}
	}
	s.metrics.proxies.Add(1)
}

func (s *Server) disconnect(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, sub)
	s.unwatchLocked(sub, sub.followed())
	s.metrics.proxies.Add(-1)
}

// admitStream takes a stream slot for identity, or says which bound
// refuses it; release gives the slot back.
func (s *Server) admitStream(identity string) (release func(), refused int, ok bool) {
	s.smu.Lock()
	defer s.smu.Unlock()
	switch {
	case s.streamsByID[identity] >= s.opts.MaxStreamsPerIdentity:
		return nil, streamPerIdentity, false
	case s.streams >= s.opts.MaxStreams:
		return nil, streamTotal, false
	}
	s.streams++
	s.streamsByID[identity]++
	return func() {
		s.smu.Lock()
		defer s.smu.Unlock()
		s.streams--
		if s.streamsByID[identity]--; s.streamsByID[identity] == 0 {
			delete(s.streamsByID, identity)
		}
	}, 0, true
}

// lookup returns the current version of a resource, or nil.
func (s *Server) lookup(k resKey) *resource {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.resources[k]
}

// Version returns the newest version handed out.
func (s *Server) Version() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.version
}
