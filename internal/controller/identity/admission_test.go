package identity

import (
	"encoding/base64"
	"testing"
	"time"
)

func jwtFor(sub string) string {
	return "e30." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"`+sub+`"}`)) + ".sig"
}

func TestPeerKey(t *testing.T) {
	a := peerKey(jwtFor("system:serviceaccount:shop:web"), "10.244.0.5:41000")
	if a != "system:serviceaccount:shop:web@10.244.0.5" {
		t.Errorf("key %q", a)
	}
	// Another port of the same pod is the same peer; the same claim from
	// another address is another one.
	if b := peerKey(jwtFor("system:serviceaccount:shop:web"), "10.244.0.5:41001"); b != a {
		t.Errorf("another port: %q", b)
	}
	if c := peerKey(jwtFor("system:serviceaccount:shop:web"), "10.244.0.6:41000"); c == a {
		t.Error("another address shares the key")
	}
	if d := peerKey("not a jwt", "10.244.0.5:1"); d != "@10.244.0.5" {
		t.Errorf("garbage token: %q", d)
	}
}

// The per-peer budget refuses a peer past its burst until its rate brings
// tokens back; another peer is untouched; the total rate refuses everyone.
func TestAdmissionRates(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newAdmission(Limits{RatePerPeer: 1, BurstPerPeer: 3, Rate: 10, Burst: 5, MaxInFlightPerPeer: 100}, func() time.Time { return now })
	for i := range 3 {
		s, no := a.admit("a", nil)
		if no != nil {
			t.Fatalf("request %d of the burst refused: %s", i, no.msg)
		}
		s.done()
	}
	_, no := a.admit("a", nil)
	if no == nil || no.reason != ReasonRateLimited || no.retryAfter <= 0 || no.retryAfter > time.Second {
		t.Fatalf("past the burst: %+v, want rate-limited with a retry within 1s", no)
	}
	s, no := a.admit("b", nil)
	if no != nil {
		t.Fatalf("another peer refused: %s", no.msg)
	}
	s.done()
	// The total burst (5) is spent by now: 3 of a, 1 of b, and this one.
	s, no = a.admit("c", nil)
	if no != nil {
		t.Fatalf("the fifth request refused: %s", no.msg)
	}
	s.done()
	if _, no := a.admit("d", nil); no == nil || no.reason != ReasonRateLimited {
		t.Fatalf("past the total burst: %+v, want rate-limited", no)
	}
	now = now.Add(time.Second)
	if s, no := a.admit("a", nil); no != nil {
		t.Fatalf("a second later: %s", no.msg)
	} else {
		s.done()
	}
}

// A peer holds at most MaxInFlightPerPeer slots; past MaxInFlight requests
// wait for a slot up to QueueWait, and past MaxQueued they are refused.
func TestAdmissionConcurrency(t *testing.T) {
	a := newAdmission(Limits{MaxInFlight: 2, MaxQueued: 1, QueueWait: 50 * time.Millisecond, MaxInFlightPerPeer: 2, RatePerPeer: 1e6, BurstPerPeer: 1e6, Rate: 1e6}, nil)
	s1, no := a.admit("a", nil)
	if no != nil {
		t.Fatal(no.msg)
	}
	s2, no := a.admit("a", nil)
	if no != nil {
		t.Fatal(no.msg)
	}
	if _, no := a.admit("a", nil); no == nil || no.reason != ReasonRateLimited {
		t.Fatalf("a third request of one peer: %+v, want rate-limited", no)
	}
	// Both slots are taken: b waits, then is refused.
	began := time.Now()
	if _, no := a.admit("b", nil); no == nil || no.reason != ReasonBusy || time.Since(began) < 50*time.Millisecond {
		t.Fatalf("no slot: %+v after %v, want busy after the queue wait", no, time.Since(began))
	}
	// A waiter gets the slot given back.
	got := make(chan *admitRefusal, 1)
	go func() {
		s, no := a.admit("b", nil)
		if no == nil {
			s.done()
		}
		got <- no
	}()
	for {
		a.mu.Lock()
		q := a.queued
		a.mu.Unlock()
		if q == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// The queue (1) is full now.
	if _, no := a.admit("c", nil); no == nil || no.reason != ReasonBusy {
		t.Fatalf("past the queue: %+v, want busy", no)
	}
	s1.done()
	if no := <-got; no != nil {
		t.Fatalf("the waiter: %s", no.msg)
	}
	s2.done()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.peers["a"].inFlight != 0 || a.peers["b"].inFlight != 0 || a.queued != 0 || len(a.slots) != 0 {
		t.Errorf("slots not given back: a %d, b %d, queued %d, slots %d", a.peers["a"].inFlight, a.peers["b"].inFlight, a.queued, len(a.slots))
	}
}

// The peers remembered are bounded: idle ones with their burst back are
// forgotten, and while every one is busy a new peer is refused.
func TestAdmissionForgetsIdlePeers(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newAdmission(Limits{MaxPeers: 2, RatePerPeer: 1, BurstPerPeer: 1}, func() time.Time { return now })
	s, _ := a.admit("a", nil)
	s.done()
	held, no := a.admit("b", nil)
	if no != nil {
		t.Fatal(no.msg)
	}
	// a has spent its burst: it is not idle yet, and b is in flight.
	if _, no := a.admit("c", nil); no == nil || no.reason != ReasonBusy {
		t.Fatalf("a third peer while both are busy: %+v, want busy", no)
	}
	now = now.Add(2 * time.Second) // a's burst is back
	s, no = a.admit("c", nil)
	if no != nil {
		t.Fatalf("a third peer once a is idle: %s", no.msg)
	}
	s.done()
	held.done()
	if _, ok := a.peers["a"]; ok || len(a.peers) != 2 {
		t.Errorf("peers %v, want a forgotten", a.peers)
	}
}
