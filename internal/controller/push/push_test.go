package push

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }

func ep(addr string) meshapi.Endpoint {
	return meshapi.Endpoint{Address: addr, Meshed: true, Identity: "spiffe://cluster.local/ns/shop/sa/web", Pod: "shop/" + addr}
}

func eps(addrs ...string) []meshapi.Endpoint {
	out := make([]meshapi.Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = ep(a)
	}
	return out
}

func TestDelta(t *testing.T) {
	zoned := ep("10.0.0.2")
	zoned.Zone = "b"
	for _, c := range []struct {
		name     string
		old, new []meshapi.Endpoint
		up       []string
		rm       []string
	}{
		{"same", eps("10.0.0.1", "10.0.0.2"), eps("10.0.0.1", "10.0.0.2"), nil, nil},
		{"added", eps("10.0.0.1"), eps("10.0.0.1", "10.0.0.2"), []string{"10.0.0.2"}, nil},
		{"removed", eps("10.0.0.1", "10.0.0.2", "10.0.0.3"), eps("10.0.0.1", "10.0.0.3"), nil, []string{"10.0.0.2"}},
		{"changed", eps("10.0.0.1", "10.0.0.2"), []meshapi.Endpoint{ep("10.0.0.1"), zoned}, []string{"10.0.0.2"}, nil},
		{"all new", eps("10.0.0.1"), eps("10.0.0.2"), []string{"10.0.0.2"}, []string{"10.0.0.1"}},
		{"from none", nil, eps("10.0.0.1"), []string{"10.0.0.1"}, nil},
		{"to none", eps("10.0.0.1"), nil, nil, []string{"10.0.0.1"}},
	} {
		up, rm := delta(c.old, c.new)
		var upAddrs []string
		for _, e := range up {
			upAddrs = append(upAddrs, e.Address)
		}
		if !slices.Equal(upAddrs, c.up) || !slices.Equal(rm, c.rm) {
			t.Errorf("%s: upsert %v remove %v, want %v %v", c.name, upAddrs, rm, c.up, c.rm)
		}
		// Applying the delta to old gives new, as the proxy's Set does.
		set := &meshapi.Set{Services: map[string]*meshapi.ServiceState{"a/b": {Endpoints: c.old, EndpointsVersion: 1}}}
		n, err := set.Apply(&meshapi.ServerMessage{Kind: meshapi.KindEndpoints, Name: "a/b", Version: 2,
			EndpointsDelta: &meshapi.EndpointsDelta{Base: 1, Upsert: up, Remove: rm}})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := n.Services["a/b"].Endpoints
		slices.SortFunc(got, func(a, b meshapi.Endpoint) int { return strings.Compare(a.Address, b.Address) })
		if fmt.Sprint(got) != fmt.Sprint(c.new) && !(len(got) == 0 && len(c.new) == 0) {
			t.Errorf("%s: applied %v, want %v", c.name, got, c.new)
		}
	}
}

func TestDebouncer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	d := debouncer{quiet: 10 * time.Millisecond, max: 100 * time.Millisecond}
	if d.due(t0) || !d.deadline().IsZero() {
		t.Fatal("due with nothing pending")
	}
	// After a quiet period a change is due at once.
	d.add(t0)
	if !d.due(t0) {
		t.Errorf("an isolated change is due %v after it, want at once", d.deadline().Sub(t0))
	}
	if n := d.reset(t0); n != 1 {
		t.Errorf("reset: %d changes, want 1", n)
	}
	// The next one, within the quiet window of that flush, waits for it.
	t1 := t0.Add(2 * time.Millisecond)
	d.add(t1)
	if d.due(t1.Add(9*time.Millisecond)) || !d.due(t1.Add(10*time.Millisecond)) {
		t.Errorf("a change right after a flush is due %v after it, want 10ms", d.deadline().Sub(t1))
	}
	// A change every 5 ms keeps the quiet window open, but the batch is
	// due 100 ms after its first change.
	for ms := 5; ms <= 200; ms += 5 {
		d.add(t1.Add(time.Duration(ms) * time.Millisecond))
	}
	if got := d.deadline().Sub(t1); got != 100*time.Millisecond {
		t.Errorf("deadline under steady changes: %v after the first, want 100ms", got)
	}
	if n := d.reset(t1.Add(100 * time.Millisecond)); n != 41 {
		t.Errorf("reset: %d changes, want 41", n)
	}
	if d.due(t0.Add(time.Hour)) || d.quiet != 10*time.Millisecond {
		t.Error("reset kept state")
	}
}

func newTestServer() *Server {
	return New(Options{Logger: slog.New(slog.DiscardHandler)})
}

var webSvc = &meshapi.Service{Namespace: "shop", Name: "web", Addresses: []string{"10.96.0.12"},
	Ports: []meshapi.ServicePort{{Name: "http", Port: 80, TargetPort: 8080, Protocol: meshapi.ProtocolHTTP1}}}

// written decodes what write sent.
func written(t *testing.T, s *Server, sub *subscriber) []*meshapi.ServerMessage {
	t.Helper()
	var buf bytes.Buffer
	if err := s.write(&buf, sub); err != nil {
		t.Fatal(err)
	}
	var out []*meshapi.ServerMessage
	dec := meshapi.NewDecoder(&buf, 0)
	for {
		var m meshapi.ServerMessage
		if err := dec.Decode(&m); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		out = append(out, &m)
	}
}

func describe(ms []*meshapi.ServerMessage) []string {
	var out []string
	for _, m := range ms {
		d := fmt.Sprintf("%s %s v%d", m.Kind, m.Name, m.Version)
		if m.EndpointsDelta != nil {
			d += fmt.Sprintf(" delta from v%d", m.EndpointsDelta.Base)
		}
		out = append(out, d)
	}
	return out
}

// A subscriber that does not write while versions go by gets only the
// newest one of each resource; one that kept up gets deltas; a NACK of a
// delta for its base brings the whole set.
func TestCoalescingAndDeltas(t *testing.T) {
	s := newTestServer()
	s.UpsertService("shop/web", webSvc)
	s.UpsertEndpoints("shop/web", eps("10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.0.4"))
	s.Flush()
	encodedBefore := s.Version()

	fast, slow := newSubscriber("fast", s.log), newSubscriber("slow", s.log)
	for _, sub := range []*subscriber{fast, slow} {
		s.connect(sub)
		s.subscribe(sub, &meshapi.Subscription{Services: []string{"shop/web"}})
	}
	if got := describe(written(t, s, fast)); !slices.Equal(got, []string{"Service shop/web v1", "Endpoints shop/web v2"}) {
		t.Fatalf("first write: %q", got)
	}
	written(t, s, slow)

	// Ten endpoint changes; fast writes after each, slow only at the end.
	for i := range 10 {
		s.UpsertEndpoints("shop/web", eps("10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.0.4", fmt.Sprintf("10.244.1.%d", i)))
		s.Flush()
		got := written(t, s, fast)
		if len(got) != 1 || got[0].EndpointsDelta == nil {
			t.Fatalf("change %d: fast got %q, want one delta", i, describe(got))
		}
	}
	if s.Version() != encodedBefore+10 {
		t.Errorf("version went from %d to %d for 10 changes", encodedBefore, s.Version())
	}
	got := written(t, s, slow)
	if len(got) != 1 || got[0].Endpoints == nil || got[0].Version != s.Version() || len(got[0].Endpoints.Endpoints) != 5 {
		t.Fatalf("slow got %q, want only the newest endpoints in full", describe(got))
	}

	// No change, no message.
	s.UpsertEndpoints("shop/web", eps("10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.1.9"))
	s.UpsertService("shop/web", webSvc)
	s.Flush()
	if got := written(t, s, fast); len(got) != 0 {
		t.Errorf("an unchanged resource was sent: %q", describe(got))
	}

	// A NACK of a delta for its base: the whole set follows.
	s.UpsertEndpoints("shop/web", eps("10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.0.4"))
	s.Flush()
	d := written(t, s, fast)
	if len(d) != 1 || d[0].EndpointsDelta == nil {
		t.Fatalf("got %q, want a delta", describe(d))
	}
	res := fast.ack(&meshapi.Ack{Kind: meshapi.KindEndpoints, Name: "shop/web", Version: d[0].Version, Error: "applying: " + meshapi.ErrDeltaBase.Error()}, time.Now())
	if !res.resend {
		t.Fatal("a NACK for the delta's base asks for no resend")
	}
	full := written(t, s, fast)
	if len(full) != 1 || full[0].Endpoints == nil || full[0].Version != d[0].Version {
		t.Errorf("after the NACK: %q, want version %d in full", describe(full), d[0].Version)
	}
	// Other NACKs are only recorded.
	if res := fast.ack(&meshapi.Ack{Kind: meshapi.KindEndpoints, Name: "shop/web", Version: d[0].Version, Error: "bad"}, time.Now()); res.resend {
		t.Error("a NACK for another reason asks for a resend")
	}

	// Removal reaches those that had the service.
	s.RemoveEndpoints("shop/web")
	s.RemoveService("shop/web")
	s.Flush()
	if got := describe(written(t, s, fast)); len(got) != 2 {
		t.Errorf("removal: %q", got)
	}
}

// A delta bigger than the whole set is not sent.
func TestDeltaOnlyWhenSmaller(t *testing.T) {
	s := newTestServer()
	s.UpsertEndpoints("shop/web", eps("10.244.0.1"))
	s.Flush()
	sub := newSubscriber("p", s.log)
	s.connect(sub)
	s.subscribe(sub, &meshapi.Subscription{Services: []string{"shop/web"}})
	written(t, s, sub)
	s.UpsertEndpoints("shop/web", eps("10.244.0.2"))
	s.Flush()
	if got := written(t, s, sub); len(got) != 1 || got[0].Endpoints == nil {
		t.Errorf("got %q, want the whole (smaller) set", describe(got))
	}
}

func TestServerBatchesChanges(t *testing.T) {
	s := New(Options{Logger: slog.New(slog.DiscardHandler), Debounce: 20 * time.Millisecond, MaxDelay: time.Second})
	ctx, cancel := contextWithCancel()
	defer cancel()
	go s.Run(ctx)
	for i := range 20 {
		s.UpsertEndpoints("shop/web", eps(fmt.Sprintf("10.244.0.%d", i+1)))
	}
	deadline := time.Now().Add(2 * time.Second)
	for s.Metrics().Batches() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	// The first change goes at once (nothing was flushed before it), the
	// other 19 wait for the window together.
	if b := s.Metrics().Batches(); b > 2 {
		t.Errorf("%d batches for 20 changes in a burst, want at most 2", b)
	}
	if v := s.Version(); v > 2 {
		t.Errorf("version %d, want at most 2: one version for the burst after its first change", v)
	}
}

func TestHandlerRefuses(t *testing.T) {
	ca := newTestCA(t)
	s := startServer(t, ca, Options{})
	srv := ca.serve(t, s.Handler())
	hello := `{"hello":{"apiVersion":"` + meshapi.APIVersion + `","proxyVersion":"t"}}` + "\n"
	for _, c := range []struct {
		name, id, method, body string
		want                   int
	}{
		{"no certificate", "", http.MethodPost, hello, http.StatusUnauthorized},
		{"not a POST", "spiffe://cluster.local/ns/a/sa/b", http.MethodGet, "", http.StatusMethodNotAllowed},
		{"no hello first", "spiffe://cluster.local/ns/a/sa/b", http.MethodPost, `{"subscribe":{}}` + "\n", http.StatusBadRequest},
		{"another API version", "spiffe://cluster.local/ns/a/sa/b", http.MethodPost, `{"hello":{"apiVersion":"v0","proxyVersion":"t"}}` + "\n", http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+meshapi.PathDiscovery, strings.NewReader(c.body))
		resp, err := ca.client(t, c.id).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || !strings.Contains(string(b), `"reason"`) {
			t.Errorf("%s: %d %s, want %d with a meshapi.Error", c.name, resp.StatusCode, b, c.want)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("%s: served over %s, want HTTP/2", c.name, resp.Proto)
		}
	}
	// A certificate the server does not trust fails the handshake.
	other := newTestCA(t)
	tc := &http.Transport{TLSClientConfig: ca.client(t, "").Transport.(*http.Transport).TLSClientConfig.Clone(), ForceAttemptHTTP2: true}
	tc.TLSClientConfig.Certificates = other.client(t, "spiffe://cluster.local/ns/a/sa/b").Transport.(*http.Transport).TLSClientConfig.Certificates
	if resp, err := (&http.Client{Transport: tc}).Post(srv.URL+meshapi.PathDiscovery, meshapi.ContentType, strings.NewReader(hello)); err == nil {
		resp.Body.Close()
		t.Errorf("a certificate of another CA got %s", resp.Status)
	}
}

// A proxy cannot make the controller follow resources without end: past its
// bound, subscriptions by name and by address are ignored and counted.
func TestSubscriptionsAreBoundedPerProxy(t *testing.T) {
	s := New(Options{Logger: slog.New(slog.DiscardHandler), MaxResourcesPerProxy: 6})
	sub := newSubscriber("p", s.log)
	s.connect(sub)
	s.subscribe(sub, &meshapi.Subscription{Services: []string{"a/1", "a/2"}})
	s.subscribe(sub, &meshapi.Subscription{Addresses: []string{"10.96.0.1:80", "10.96.0.2:80", "10.96.0.3:80"}})
	s.subscribe(sub, &meshapi.Subscription{Services: []string{"a/3"}})
	if n := sub.following(); n > 6 {
		t.Errorf("the proxy follows %d resources, past its bound of 6", n)
	}
	if got := s.metrics.subscriptionsRefused[refusedResources].Load(); got != 2 {
		t.Errorf("counted %d refused subscriptions, want 2 (the third address and a/3)", got)
	}
}
