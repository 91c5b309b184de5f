package admin

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type fixedMetrics string

func (m fixedMetrics) WriteMetrics(w io.Writer) error {
	_, err := io.WriteString(w, string(m))
	return err
}

func get(t *testing.T, h http.Handler, method, path, remote string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func TestEndpoints(t *testing.T) {
	var configErr error = errors.New("no valid MeshConfig seen yet")
	a := &Admin{
		Checks: []Check{
			{Name: "meshconfig", Err: func() error { return configErr }},
			{Name: "webhook certificate", Err: func() error { return nil }},
		},
		Metrics: []MetricsWriter{fixedMetrics("a 1\n"), fixedMetrics("b 2\n")},
		Logger:  slog.New(slog.DiscardHandler),
	}
	h := a.Handler()
	const remote = "10.0.0.7:40000"

	if code, body := get(t, h, "GET", "/ready", remote); code != 503 || body != "not ready:\nmeshconfig: no valid MeshConfig seen yet\n" {
		t.Errorf("/ready before the config: %d %q", code, body)
	}
	configErr = nil
	if code, body := get(t, h, "GET", "/ready", remote); code != 200 || body != "ready\n" {
		t.Errorf("/ready with the config: %d %q", code, body)
	}
	a.Drain()
	if code, body := get(t, h, "GET", "/ready", remote); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("/ready while draining: %d %q", code, body)
	}
	if code, _ := get(t, h, "GET", "/live", remote); code != 200 {
		t.Errorf("/live while draining: %d", code)
	}
	if code, body := get(t, h, "GET", "/metrics", remote); code != 200 || body != "a 1\nb 2\n" {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _ := get(t, h, "POST", "/ready", remote); code != 405 {
		t.Errorf("POST /ready: %d, want 405", code)
	}
	if code, _ := get(t, h, "GET", "/debug/pprof/", remote); code != 403 {
		t.Errorf("pprof from %s: %d, want 403", remote, code)
	}
	for _, lo := range []string{"127.0.0.1:40000", "[::1]:40000"} {
		if code, body := get(t, h, "GET", "/debug/pprof/", lo); code != 200 || !strings.Contains(body, "goroutine") {
			t.Errorf("pprof from %s: %d", lo, code)
		}
	}
}
