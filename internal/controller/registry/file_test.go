package registry

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
)

// recorder is a Sink that records calls.
type recorder struct {
	mu    sync.Mutex
	calls []string
	svcs  map[string]*meshapi.Service
	eps   map[string][]meshapi.Endpoint
}

func newRecorder() *recorder {
	return &recorder{svcs: map[string]*meshapi.Service{}, eps: map[string][]meshapi.Endpoint{}}
}

func (r *recorder) UpsertService(key string, s *meshapi.Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "service "+key)
	r.svcs[key] = s
}

func (r *recorder) RemoveService(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "-service "+key)
	delete(r.svcs, key)
}

func (r *recorder) UpsertEndpoints(key string, eps []meshapi.Endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "endpoints "+key)
	r.eps[key] = eps
}

func (r *recorder) RemoveEndpoints(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "-endpoints "+key)
	delete(r.eps, key)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

const webYAML = `namespace: shop
name: web
addresses: ["10.96.0.12", "fd00::12"]
ports:
  - {name: http, port: 80, targetPort: 8080, protocol: http1}
  - {name: admin, port: 9090}
endpoints:
  - address: 10.244.0.6
    meshed: true
    identity: spiffe://cluster.local/ns/shop/sa/web
    ports: {admin: 9091}
  - {address: 10.244.0.5, zone: a}
`

func TestFileRegistry(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		// Make the change visible to a poll even within the file
		// system's timestamp granularity.
		mod := time.Now().Add(time.Duration(len(content)) * time.Millisecond)
		os.Chtimes(p, mod, mod)
	}
	write("web.yaml", webYAML)
	write("notes.txt", "not a service")

	rec := newRecorder()
	f := &File{Dir: dir, PollInterval: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, rec) }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: timed out", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("synced", func() bool { return f.Synced() == nil })
	if got := rec.take(); len(got) != 2 || got[0] != "service shop/web" || got[1] != "endpoints shop/web" {
		t.Fatalf("first read: %q", got)
	}
	rec.mu.Lock()
	eps := rec.eps["shop/web"]
	rec.mu.Unlock()
	if len(eps) != 2 || eps[0].Address != "10.244.0.5" || !eps[1].Meshed || eps[1].Ports["admin"] != 9091 {
		t.Errorf("endpoints: %+v", eps)
	}

	// Rewriting the same content in another layout changes nothing a
	// proxy sees.
	write("web.yaml", "# reformatted\n"+webYAML)
	time.Sleep(100 * time.Millisecond)
	if got := rec.take(); len(got) != 0 {
		t.Errorf("same content: %q, want no call", got)
	}

	// An invalid file keeps the last good content.
	write("web.yaml", "namespace: shop\nname: web\nports: [{port: 80}]\n")
	time.Sleep(100 * time.Millisecond)
	if got := rec.take(); len(got) != 0 {
		t.Errorf("invalid file: %q, want no call", got)
	}

	// An endpoint change alone brings only endpoints; JSON works too.
	os.Remove(filepath.Join(dir, "web.yaml"))
	write("web.json", `{"namespace":"shop","name":"web","addresses":["10.96.0.12","fd00::12"],
	  "ports":[{"name":"http","port":80,"targetPort":8080,"protocol":"http1"},{"name":"admin","port":9090}],
	  "endpoints":[{"address":"10.244.0.5","zone":"a"}]}`)
	waitFor("endpoint change", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.calls) > 0 })
	time.Sleep(60 * time.Millisecond)
	if got := rec.take(); len(got) != 1 || got[0] != "endpoints shop/web" {
		t.Errorf("endpoint change: %q", got)
	}

	os.Remove(filepath.Join(dir, "web.json"))
	waitFor("removal", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.calls) > 0 })
	time.Sleep(60 * time.Millisecond)
	if got := rec.take(); len(got) != 2 || got[0] != "-endpoints shop/web" || got[1] != "-service shop/web" {
		t.Errorf("removal: %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func TestReadFileServiceRefuses(t *testing.T) {
	for name, content := range map[string]string{
		"unknown field":  "namespace: a\nname: b\nport: 80\n",
		"bad address":    "namespace: a\nname: b\naddresses: [nope]\n",
		"named target":   "namespace: a\nname: b\nports: [{port: 80}]\n",
		"unknown port":   "namespace: a\nname: b\nports: [{name: http, port: 80}]\nendpoints: [{address: 10.0.0.1, ports: {grpc: 1}}]\n",
		"meshed, no id":  "namespace: a\nname: b\nendpoints: [{address: 10.0.0.1, meshed: true}]\n",
		"duplicate addr": "namespace: a\nname: b\nendpoints: [{address: 10.0.0.1}, {address: 10.0.0.1}]\n",
		"missing name":   "namespace: a\n",
		"bad protocol":   "namespace: a\nname: b\nports: [{port: 80, targetPort: 80, protocol: udp}]\n",
		"not even a map": "- 1\n",
	} {
		p := filepath.Join(t.TempDir(), "svc.yaml")
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := ReadFileService(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
