package identity

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// Limits bound the certificate requests the controller works on, so that
// one proxy in a loop, or every pod of a cluster restarting at once, can
// neither hold its memory and goroutines without end nor starve the others
// of issuance. Zero fields take the Default* values.
type Limits struct {
	// MaxInFlight bounds the requests being reviewed and signed at once,
	// over all peers; a request past it waits up to QueueWait for a slot.
	MaxInFlight int
	// MaxQueued bounds the requests waiting for such a slot; past it a
	// request is refused at once.
	MaxQueued int
	// QueueWait bounds how long a request waits for a slot.
	QueueWait time.Duration
	// Rate and Burst bound the requests admitted per second over all
	// peers (a token bucket).
	Rate  float64
	Burst int
	// MaxInFlightPerPeer, RatePerPeer and BurstPerPeer are the same per
	// peer: the ServiceAccount the token claims, from the address it comes
	// from. The claim is read before the API server has checked the token,
	// so the source address is part of the key: a forged claim from
	// elsewhere spends its own budget, never its victim's.
	MaxInFlightPerPeer int
	RatePerPeer        float64
	BurstPerPeer       int
	// MaxPeers bounds the peers whose budget is remembered; a peer that
	// is idle and has its whole burst back is forgotten first.
	MaxPeers int
}

// Defaults of Limits. A proxy asks for a certificate at start and at
// about 70 % of its lifetime, so a peer's budget is generous for one pod.
// The total rate is above what two cores issue (about 400 requests per
// second with the API server's TokenReview on the same cores), so that in
// practice the slots bound the work and the rate only a burst past them.
const (
	DefaultMaxInFlight        = 64
	DefaultMaxQueued          = 1024
	DefaultQueueWait          = 2 * time.Second
	DefaultRate               = 1000
	DefaultMaxInFlightPerPeer = 2
	DefaultRatePerPeer        = 1
	DefaultBurstPerPeer       = 5
	DefaultMaxPeers           = 100000
)

func (l Limits) withDefaults() Limits {
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = DefaultMaxInFlight
	}
	if l.MaxQueued <= 0 {
		l.MaxQueued = DefaultMaxQueued
	}
	if l.QueueWait <= 0 {
		l.QueueWait = DefaultQueueWait
	}
	if l.Rate <= 0 {
		l.Rate = DefaultRate
	}
	if l.Burst <= 0 {
		l.Burst = max(1, int(l.Rate))
	}
	if l.MaxInFlightPerPeer <= 0 {
		l.MaxInFlightPerPeer = DefaultMaxInFlightPerPeer
	}
	if l.RatePerPeer <= 0 {
		l.RatePerPeer = DefaultRatePerPeer
	}
	if l.BurstPerPeer <= 0 {
		l.BurstPerPeer = DefaultBurstPerPeer
	}
	if l.MaxPeers <= 0 {
		l.MaxPeers = DefaultMaxPeers
	}
	return l
}

// Why a request was not admitted; each is a value of the refusals
// counter's reason label.
// (meshapi's, which the proxy knows too).
const (
	// ReasonRateLimited: the peer's or the controller's rate, or the
	// peer's concurrency, is spent (429, with Retry-After).
	ReasonRateLimited = meshapi.ReasonRateLimited
	// ReasonBusy: no slot came free within QueueWait, too many wait
	// already, or too many peers are remembered (503, with Retry-After).
	ReasonBusy = meshapi.ReasonBusy
)

// bucket is a token bucket.
type bucket struct {
	tokens float64
	last   time.Time
}

// take refills the bucket at rate up to burst and takes a token if there
// is one; otherwise it says how long until there is.
func (b *bucket) take(now time.Time, rate float64, burst int) (bool, time.Duration) {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(float64(burst), b.tokens+d.Seconds()*rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// full reports whether the bucket has its whole burst back at now.
func (b *bucket) full(now time.Time, rate float64, burst int) bool {
	return b.tokens+now.Sub(b.last).Seconds()*rate >= float64(burst)
}

type peer struct {
	inFlight int
	bucket   bucket
}

// admission applies Limits. The zero value is not usable: see newAdmission.
type admission struct {
	lim   Limits
	now   func() time.Time
	slots chan struct{}

	mu     sync.Mutex
	queued int
	total  bucket
	peers  map[string]*peer
}

func newAdmission(lim Limits, now func() time.Time) *admission {
	lim = lim.withDefaults()
	if now == nil {
		now = time.Now
	}
	return &admission{lim: lim, now: now, slots: make(chan struct{}, lim.MaxInFlight), peers: map[string]*peer{}}
}

// admitted is a request that holds a slot; done gives it back.
type admitted struct {
	a   *admission
	key string
}

func (t admitted) done() {
	<-t.a.slots
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	if p := t.a.peers[t.key]; p != nil {
		p.inFlight--
	}
}

// refusal is why admit said no, and when to try again.
type admitRefusal struct {
	reason     string
	retryAfter time.Duration
	msg        string
}

// admit takes the peer's and the controller's budget and a slot, waiting
// for one until QueueWait or until cancel is closed.
func (a *admission) admit(key string, cancel <-chan struct{}) (admitted, *admitRefusal) {
	now := a.now()
	a.mu.Lock()
	p := a.peers[key]
	if p == nil {
		if len(a.peers) >= a.lim.MaxPeers {
			a.forgetIdle(now)
		}
		if len(a.peers) >= a.lim.MaxPeers {
			a.mu.Unlock()
			return admitted{}, &admitRefusal{ReasonBusy, time.Second, "the controller tracks as many requesters as it may"}
		}
		p = &peer{}
		a.peers[key] = p
	}
	if p.inFlight >= a.lim.MaxInFlightPerPeer {
		a.mu.Unlock()
		return admitted{}, &admitRefusal{ReasonRateLimited, time.Second, "too many certificate requests in flight from this ServiceAccount and address"}
	}
	if ok, wait := p.bucket.take(now, a.lim.RatePerPeer, a.lim.BurstPerPeer); !ok {
		a.mu.Unlock()
		return admitted{}, &admitRefusal{ReasonRateLimited, wait, "too many certificate requests from this ServiceAccount and address"}
	}
	if ok, wait := a.total.take(now, a.lim.Rate, a.lim.Burst); !ok {
		a.mu.Unlock()
		return admitted{}, &admitRefusal{ReasonRateLimited, wait, "the controller takes no more certificate requests per second"}
	}
	if a.queued >= a.lim.MaxQueued {
		a.mu.Unlock()
		return admitted{}, &admitRefusal{ReasonBusy, time.Second, "too many certificate requests wait already"}
	}
	p.inFlight++
	a.queued++
	a.mu.Unlock()

	timer := time.NewTimer(a.lim.QueueWait)
	defer timer.Stop()
	var ref *admitRefusal
	select {
	case a.slots <- struct{}{}:
	case <-timer.C:
		ref = &admitRefusal{ReasonBusy, time.Second, "no certificate request slot came free in time"}
	case <-cancel:
		ref = &admitRefusal{ReasonBusy, time.Second, "the request ended while it waited"}
	}
	a.mu.Lock()
	a.queued--
	if ref != nil {
		p.inFlight--
	}
	a.mu.Unlock()
	if ref != nil {
		return admitted{}, ref
	}
	return admitted{a: a, key: key}, nil
}

// forgetIdle drops the peers with nothing in flight and their whole burst
// back: forgetting them changes nothing. mu must be held.
func (a *admission) forgetIdle(now time.Time) {
	for k, p := range a.peers {
		if p.inFlight == 0 && p.bucket.full(now, a.lim.RatePerPeer, a.lim.BurstPerPeer) {
			delete(a.peers, k)
		}
	}
}

// peerKey is the ServiceAccount a token claims (unverified: the API server
// checks it afterwards) and the host the request comes from.
func peerKey(token, remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	return claimedSubject(token) + "@" + host
}

// claimedSubject returns the "sub" claim of a JWT without verifying it, or
// "" when there is none.
func claimedSubject(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil || len(claims.Sub) > 512 {
		return ""
	}
	return claims.Sub
}
