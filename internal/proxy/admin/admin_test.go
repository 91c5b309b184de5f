package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// fakeProxy stands in for the data plane: the admin API's own logic
// (routing, peer and method checks, documents) is what is under test, and
// the proxy's drain is tested in package proxy.
type fakeProxy struct {
	draining, shutdown bool
}

func (f *fakeProxy) Ready() (bool, string) {
	if f.draining {
		return false, "draining"
	}
	return true, ""
}
func (f *fakeProxy) Draining() bool { return f.draining }
func (f *fakeProxy) Listeners() []adminapi.Listener {
	return []adminapi.Listener{{Name: "outbound", Address: "[::]:15100"}}
}
func (f *fakeProxy) Gauges() []metrics.Gauge { return nil }
func (f *fakeProxy) Drain()                  { f.draining = true }
func (f *fakeProxy) Shutdown()               { f.shutdown = true }

func setup(t *testing.T) (http.Handler, *fakeProxy, *slog.LevelVar, string) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("version: v1\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 80}], endpoints: [{address: 10.1.0.1, identity: \"spiffe://td/ns/b/sa/a\"}]}]\n"), 0o644)
	st := &config.Store{}
	if _, err := st.Reload(path); err != nil {
		t.Fatal(err)
	}
	fp := &fakeProxy{}
	lv := new(slog.LevelVar)
	h := NewHandler(Options{Proxy: fp, Config: st, Metrics: metrics.New(), Level: lv,
		Reload: func() (*config.Table, error) { return st.Reload(path) }, Log: slog.New(slog.DiscardHandler)})
	return h, fp, lv, path
}

func do(h http.Handler, method, target, peer string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = peer
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

const (
	loopback = "127.0.0.1:5555"
	remote   = "10.0.0.9:5555"
)

// The proxy's whole /metrics reads back with Prometheus' parser, even
// with a configuration version holding a tab and a quote (Go quoting wrote
// "\t", which the parser refuses, so the whole scrape was lost).
func TestMetricsReadBackWithPrometheus(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("version: \"v\\t1 \\\"x\\\"\"\n"), 0o644)
	st := &config.Store{}
	if _, err := st.Reload(path); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Options{Proxy: &fakeProxy{}, Config: st, Metrics: metrics.New(), Level: new(slog.LevelVar),
		Reload: func() (*config.Table, error) { return st.Reload(path) }, Log: slog.New(slog.DiscardHandler)})
	do(h, "POST", "/reload", loopback)
	w := do(h, "GET", "/metrics", remote)
	families := promtexttest.Parse(t, w.Body.String())
	if v, ok := promtexttest.Value(families, "meshproxy_config_info", "version", "v\t1 \"x\""); !ok || v != 1 {
		t.Errorf("config_info read back as %v (found %v):\n%s", v, ok, w.Body.String())
	}
	if v, ok := promtexttest.Value(families, "meshproxy_config_reloads_total", "result", "ok"); !ok || v < 1 {
		t.Errorf("reloads read back as %v (found %v):\n%s", v, ok, w.Body.String())
	}
}

func TestReadEndpoints(t *testing.T) {
	h, fp, _, _ := setup(t)
	for _, path := range []string{"/ready", "/live", "/metrics"} {
		if w := do(h, "GET", path, remote); w.Code != 200 {
			t.Errorf("GET %s from a remote peer: %d %s", path, w.Code, w.Body)
		}
	}
	// What the proxy holds maps the mesh: loopback (and so a port-forward)
	// only.
	for _, path := range []string{"/config_dump", "/endpoints", "/listeners", "/identity", "/discovery"} {
		if w := do(h, "GET", path, remote); w.Code != 403 {
			t.Errorf("GET %s from a remote peer: %d, want 403", path, w.Code)
		}
	}
	for _, path := range []string{"/ready", "/live", "/metrics", "/config_dump", "/endpoints", "/listeners"} {
		if w := do(h, "GET", path, loopback); w.Code != 200 {
			t.Errorf("GET %s from loopback: %d %s", path, w.Code, w.Body)
		}
		if w := do(h, "POST", path, loopback); w.Code != 405 {
			t.Errorf("POST %s: %d", path, w.Code)
		}
	}
	var cd adminapi.ConfigDump
	json.Unmarshal(do(h, "GET", "/config_dump", loopback).Body.Bytes(), &cd)
	if cd.APIVersion != adminapi.APIVersion || cd.Version != "v1" {
		t.Errorf("config dump %+v", cd)
	}
	var eps adminapi.Endpoints
	json.Unmarshal(do(h, "GET", "/endpoints", loopback).Body.Bytes(), &eps)
	if len(eps.Services) != 1 || eps.Services[0].Endpoints[0].Identity != "spiffe://td/ns/b/sa/a" || eps.Services[0].Endpoints[0].Address != "10.1.0.1:80" {
		t.Errorf("endpoints %+v", eps)
	}
	if m := do(h, "GET", "/metrics", remote).Body.String(); !strings.Contains(m, `meshproxy_config_info{version="v1"} 1`) {
		t.Errorf("metrics:\n%s", m)
	}
	fp.draining = true
	w := do(h, "GET", "/ready", remote)
	var rd adminapi.Ready
	json.Unmarshal(w.Body.Bytes(), &rd)
	if w.Code != 503 || rd.Ready || rd.Reason != "draining" {
		t.Errorf("ready while draining: %d %+v", w.Code, rd)
	}
	if w := do(h, "GET", "/live", remote); w.Code != 200 {
		t.Errorf("live while draining: %d", w.Code)
	}
}

func TestMutatingEndpointsOnlyLoopbackPOST(t *testing.T) {
	for _, path := range []string{"/logging?level=debug", "/drain", "/shutdown", "/reload", "/debug/pprof/heap"} {
		h, _, _, _ := setup(t)
		for _, tc := range []struct {
			method, peer string
			want         int
		}{
			{"POST", remote, 403},
			{"POST", "[2001:db8::1]:4", 403},
			{"GET", loopback, 405},
			{"PUT", loopback, 405},
			{"POST", loopback, 0},
			{"POST", "[::1]:4", 0},
		} {
			w := do(h, tc.method, path, tc.peer)
			if tc.want == 0 {
				if w.Code >= 300 {
					t.Errorf("%s %s from %s: %d %s", tc.method, path, tc.peer, w.Code, w.Body)
				}
				continue
			}
			var e adminapi.Error
			if w.Code != tc.want || json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Status != tc.want || e.APIVersion == "" {
				t.Errorf("%s %s from %s: %d %s, want %d with an error document", tc.method, path, tc.peer, w.Code, w.Body, tc.want)
			}
		}
	}
}

func TestMutations(t *testing.T) {
	h, fp, lv, path := setup(t)
	if w := do(h, "POST", "/logging?level=debug", loopback); w.Code != 200 || lv.Level() != slog.LevelDebug {
		t.Errorf("logging: %d %v", w.Code, lv.Level())
	}
	if w := do(h, "POST", "/logging?level=loud", loopback); w.Code != 400 {
		t.Errorf("bad level: %d", w.Code)
	}
	if w := do(h, "POST", "/logging", loopback); w.Code != 400 {
		t.Errorf("missing level: %d", w.Code)
	}
	if do(h, "POST", "/drain", loopback); !fp.draining {
		t.Error("drain not started")
	}
	if do(h, "POST", "/shutdown", loopback); !fp.shutdown {
		t.Error("shutdown not started")
	}
	os.WriteFile(path, []byte("version: v2\n"), 0o644)
	w := do(h, "POST", "/reload", loopback)
	var st adminapi.Status
	json.Unmarshal(w.Body.Bytes(), &st)
	if w.Code != 200 || st.ConfigVersion != "v2" {
		t.Errorf("reload: %d %s", w.Code, w.Body)
	}
	os.WriteFile(path, []byte("version: v3\nlimits: {maxHeaderBytes: 1}\n"), 0o644)
	w = do(h, "POST", "/reload", loopback)
	body, _ := io.ReadAll(w.Body)
	if w.Code != 400 || !strings.Contains(string(body), "limits.maxHeaderBytes") {
		t.Errorf("invalid reload: %d %s", w.Code, body)
	}
	if w := do(h, "GET", "/nope", loopback); w.Code != 404 {
		t.Errorf("unknown path: %d", w.Code)
	}
}

// /endpoints shows the registry's in-flight counts, which a reload keeps:
// a request in flight when the table changes still shows.
func TestEndpointsShowInFlightAcrossReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	doc := "version: %s\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 80}], endpoints: [{address: 10.1.0.1}]}]\n"
	os.WriteFile(path, []byte(fmt.Sprintf(doc, "v1")), 0o644)
	st := &config.Store{}
	t1, err := st.Reload(path)
	if err != nil {
		t.Fatal(err)
	}
	t1.Targets()[0].Endpoints[0].Acquire()
	os.WriteFile(path, []byte(fmt.Sprintf(doc, "v2")), 0o644)
	if _, err := st.Reload(path); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(Options{Proxy: &fakeProxy{}, Config: st, Metrics: metrics.New(), Level: new(slog.LevelVar), Log: slog.New(slog.DiscardHandler)})
	var eps adminapi.Endpoints
	json.Unmarshal(do(h, "GET", "/endpoints", loopback).Body.Bytes(), &eps)
	if eps.ConfigVersion != "v2" || len(eps.Services) != 1 || eps.Services[0].Endpoints[0].Active != 1 {
		t.Errorf("endpoints %+v", eps)
	}
}

// A neighbour holding connections to the admin port cannot take more than
// the bound, and the connections past it are closed at once and counted;
// once one closes, another gets in.
func TestListenerBoundsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ln, 3)
	defer l.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var held []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	var served []net.Conn
	for range 3 {
		served = append(served, <-accepted)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Refused() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("refused %d connections, want 2", l.Refused())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range held[3:] {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a connection past the bound stayed open")
		}
	}
	served[0].Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection was accepted after one under the bound closed")
	}
}
