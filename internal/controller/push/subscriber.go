package push

import (
	"cmp"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// subscriber is one proxy's stream. The server marks resources due; the
// stream's writer takes the marks and writes the newest version of each.
// Marks are a set, so a subscriber that cannot keep up holds one mark per
// resource however many versions went by.
type subscriber struct {
	identity string
	log      *slog.Logger
	wake     chan struct{}
	// addresses counts the Resolutions followed; guarded by the
	// server's mu.
	addresses int

	mu    sync.Mutex
	due   map[resKey]bool // value: send in full even if a delta would do
	state map[resKey]*resState
}

// resState is what one stream knows about one resource.
type resState struct {
	sent      uint64    // the version written on this stream; 0: none
	sentDelta bool      // it was written as a delta
	changed   time.Time // when its change reached the server
	acked     uint64
	nacked    uint64
}

func newSubscriber(identity string, log *slog.Logger) *subscriber {
	return &subscriber{identity: identity, log: log, wake: make(chan struct{}, 1),
		due: map[resKey]bool{}, state: map[resKey]*resState{}}
}

// following counts the resources the subscriber follows.
func (sub *subscriber) following() int {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return len(sub.state)
}

// follows reports whether the subscriber follows k.
func (sub *subscriber) follows(k resKey) bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.state[k] != nil
}

// follow starts tracking a resource; mark only marks followed ones.
func (sub *subscriber) follow(k resKey) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.state[k] == nil {
		sub.state[k] = &resState{}
	}
}

func (sub *subscriber) unfollow(k resKey) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	delete(sub.state, k)
	delete(sub.due, k)
}

func (sub *subscriber) followed() []resKey {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	out := make([]resKey, 0, len(sub.state))
	for k := range sub.state {
		out = append(out, k)
	}
	return out
}

// mark says a resource has a version the stream may not have. It never
// blocks.
func (sub *subscriber) mark(k resKey, full bool) {
	sub.mu.Lock()
	if sub.state[k] != nil {
		sub.due[k] = sub.due[k] || full
	}
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
}

// kindOrder sends what a proxy needs to understand the rest first.
var kindOrder = map[meshapi.Kind]int{meshapi.KindMesh: 0, meshapi.KindBundle: 1, meshapi.KindResolution: 2, meshapi.KindService: 3, meshapi.KindEndpoints: 4}

// take returns the due resources in sending order and clears them.
func (sub *subscriber) take() ([]resKey, map[resKey]bool) {
	sub.mu.Lock()
	due := sub.due
	sub.due = make(map[resKey]bool)
	sub.mu.Unlock()
	return sortedKeys(due), due
}

// sortedKeys returns the keys of m in sending order.
func sortedKeys[V any](m map[resKey]V) []resKey {
	keys := make([]resKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b resKey) int {
		return cmp.Or(cmp.Compare(kindOrder[a.kind], kindOrder[b.kind]), cmp.Compare(a.name, b.name))
	})
	return keys
}

// choose returns the bytes to write for r, or nil when the stream has it
// already or no longer follows it.
func (sub *subscriber) choose(k resKey, r *resource, full bool) (b []byte, isDelta bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	st := sub.state[k]
	if st == nil || (st.sent == r.version && !full) {
		return nil, false
	}
	if !full && r.delta != nil && st.sent != 0 && st.sent == r.deltaBase {
		return r.delta, true
	}
	if r.removed && st.sent == 0 {
		return nil, false // never had it: nothing to remove
	}
	return r.full, false
}

// sent records that version r of k went out.
func (sub *subscriber) sent(k resKey, r *resource, isDelta bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if st := sub.state[k]; st != nil {
		st.sent, st.sentDelta, st.changed = r.version, isDelta, r.changed
	}
}

// ackResult is what an ACK or NACK meant.
type ackResult struct {
	known   bool          // the stream follows the resource
	latency time.Duration // from change to this ACK, when it acks the version sent
	resend  bool          // a delta was refused for its base: send in full
}

// ack records an ACK or NACK.
func (sub *subscriber) ack(a *meshapi.Ack, now time.Time) ackResult {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	k := resKey{a.Kind, a.Name}
	st := sub.state[k]
	if st == nil {
		return ackResult{}
	}
	res := ackResult{known: true}
	if a.Error == "" {
		if a.Version > st.acked {
			st.acked = a.Version
		}
		if a.Version == st.sent && !st.changed.IsZero() {
			res.latency = now.Sub(st.changed)
			st.changed = time.Time{} // count each version once
		}
		return res
	}
	if a.Version > st.nacked {
		st.nacked = a.Version
	}
	if a.Version == st.sent && st.sentDelta && isDeltaBaseError(a.Error) {
		st.sent = 0
		sub.due[k] = true
		res.resend = true
	}
	return res
}
