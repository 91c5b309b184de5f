package push

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (s *Server) openStreams() int {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.streams
}

// Streams are bounded per identity and in total: past either bound a
// stream is refused with 429, Retry-After and the reason, and counted; a
// stream that ends gives its slot back.
func TestStreamsAreBounded(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, Options{MaxStreams: 3, MaxStreamsPerIdentity: 2})
	srv := ca.serve(t, s.Handler())
	dial := func(id string) (*proxy, error) {
		return dialProxy(ca.client(t, "spiffe://"+trustDomain+"/ns/test/sa/"+id), srv.URL, id, nil)
	}
	a1, err := dial("a")
	if err != nil {
		t.Fatal(err)
	}
	defer a1.Close()
	a2, err := dial("a")
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if _, err := dial("a"); err == nil || !strings.Contains(err.Error(), "429") || !strings.Contains(err.Error(), ReasonTooManyStreams) {
		t.Fatalf("a third stream of one identity: %v, want 429 %s", err, ReasonTooManyStreams)
	}
	b, err := dial("b")
	if err != nil {
		t.Fatalf("another identity: %v", err)
	}
	defer b.Close()
	if _, err := dial("c"); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("a stream past the total: %v, want 429", err)
	}
	if got := s.metrics.streamsRefused[streamPerIdentity].Load(); got != 1 {
		t.Errorf("counted %d streams refused per identity, want 1", got)
	}
	if got := s.metrics.streamsRefused[streamTotal].Load(); got != 1 {
		t.Errorf("counted %d streams refused for the total, want 1", got)
	}

	// The answer carries Retry-After.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+meshapi.PathDiscovery, strings.NewReader(""))
	resp, err := ca.client(t, "spiffe://"+trustDomain+"/ns/test/sa/a").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e meshapi.Error
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || e.Reason != ReasonTooManyStreams {
		t.Errorf("refused stream: %d, Retry-After %q, reason %q", resp.StatusCode, resp.Header.Get("Retry-After"), e.Reason)
	}

	a1.Close()
	waitFor(t, "the closed stream's slot", func() bool { return s.openStreams() == 2 })
	a3, err := dial("a")
	if err != nil {
		t.Fatalf("a stream once one of its identity ended: %v", err)
	}
	a3.Close()
}

// A stream that never says hello holds its slot only until HelloTimeout.
func TestStreamWithoutHelloIsEnded(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, Options{MaxStreams: 1, HelloTimeout: 200 * time.Millisecond})
	srv := ca.serve(t, s.Handler())
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+meshapi.PathDiscovery, pr)
	began := time.Now()
	resp, err := ca.client(t, "spiffe://"+trustDomain+"/ns/test/sa/silent").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || time.Since(began) > 5*time.Second {
		t.Fatalf("a silent stream: %d after %v, want 400 after the hello timeout", resp.StatusCode, time.Since(began))
	}
	waitFor(t, "the silent stream's slot", func() bool { return s.openStreams() == 0 })
	p, err := dialProxy(ca.client(t, "spiffe://"+trustDomain+"/ns/test/sa/next"), srv.URL, "next", nil)
	if err != nil {
		t.Fatalf("the next stream: %v", err)
	}
	p.Close()
}

// Proxies never unsubscribe an address. What one follows is bounded, what
// all follow together is bounded, and a Resolution no connected proxy
// follows any more is dropped.
func TestAddressSubscriptionsAreBoundedAndPruned(t *testing.T) {
	s := New(Options{Logger: slog.New(slog.DiscardHandler), MaxAddressesPerProxy: 3, MaxAddressSubscriptions: 5})
	s.UpsertService("shop/web", webSvc)
	s.Flush()
	a := newSubscriber("a", s.log)
	s.connect(a)
	addrs := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("10.97.0.%d:80", i))
		}
		return out
	}
	s.subscribe(a, &meshapi.Subscription{Addresses: append(addrs(1, 5), "10.96.0.12:80")})
	if a.addresses != 3 {
		t.Errorf("a follows %d addresses, want its bound of 3", a.addresses)
	}
	if got := s.metrics.subscriptionsRefused[refusedAddresses].Load(); got != 2 {
		t.Errorf("counted %d addresses refused per proxy, want 2", got)
	}
	// Asking again for one it follows is no new subscription.
	s.subscribe(a, &meshapi.Subscription{Addresses: addrs(1, 2)})
	if got := s.metrics.subscriptionsRefused[refusedAddresses].Load(); got != 2 {
		t.Errorf("a repeated subscription was refused")
	}
	b := newSubscriber("b", s.log)
	s.connect(b)
	s.subscribe(b, &meshapi.Subscription{Addresses: addrs(1, 4)})
	if b.addresses != 2 || s.addrSubs != 5 {
		t.Errorf("b follows %d addresses, %d in all; want 2 and the total bound of 5", b.addresses, s.addrSubs)
	}
	if got := s.metrics.subscriptionsRefused[refusedAddressesTotal].Load(); got != 1 {
		t.Errorf("counted %d addresses refused for the total, want 1", got)
	}
	if got := s.metrics.resolutions.Load(); got != 3 {
		t.Errorf("%d resolutions held, want 3 (b's two are a's too)", got)
	}

	s.disconnect(a)
	// b still follows 10.97.0.1 and .2; a's third is gone.
	if got := s.metrics.resolutions.Load(); got != 2 || s.resolutionsHeld() != 2 {
		t.Errorf("after a left: gauge %d, %d held; want 2", got, s.resolutionsHeld())
	}
	s.disconnect(b)
	if got := s.metrics.resolutions.Load(); got != 0 || s.resolutionsHeld() != 0 || s.addrSubs != 0 {
		t.Errorf("after both left: gauge %d, %d held, %d subscriptions; want none", got, s.resolutionsHeld(), s.addrSubs)
	}
	if len(s.watchers) != 0 {
		t.Errorf("watchers left: %v", s.watchers)
	}

	// Asked again, an address resolves again, with a newer version.
	c := newSubscriber("c", s.log)
	s.connect(c)
	s.subscribe(c, &meshapi.Subscription{Addresses: []string{"10.96.0.12:80"}})
	msgs := written(t, s, c)
	var res *meshapi.ServerMessage
	for _, m := range msgs {
		if m.Kind == meshapi.KindResolution {
			res = m
		}
	}
	if res == nil || res.Resolution.Service != "shop/web" {
		t.Fatalf("resolution after pruning: %q", describe(msgs))
	}
}

func (s *Server) resolutionsHeld() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for k := range s.resources {
		if k.kind == meshapi.KindResolution {
			n++
		}
	}
	return n
}
