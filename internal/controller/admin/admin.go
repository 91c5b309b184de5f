// Package admin is the controller's admin HTTP endpoint: readiness and
// liveness for the kubelet's probes, Prometheus metrics, and pprof for
// loopback peers only (kubectl port-forward arrives on loopback inside the
// pod's network namespace; nothing else should profile the control plane).
package admin

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"
)

// Check is one condition of readiness.
type Check struct {
	// Name says what is checked, e.g. "meshconfig".
	Name string
	// Err returns nil when the condition holds, else why it does not. It is
	// called on every /ready request and must be cheap.
	Err func() error
}

// MetricsWriter writes series in the Prometheus text format.
type MetricsWriter interface {
	WriteMetrics(io.Writer) error
}

// Admin serves the admin endpoints. Set its fields before serving and do
// not change them after.
type Admin struct {
	Checks  []Check
	Metrics []MetricsWriter
	Logger  *slog.Logger

	draining atomic.Bool
}

// Drain makes /ready fail from now on, so that the Service stops sending
// requests while in-flight ones finish.
func (a *Admin) Drain() { a.draining.Store(true) }

// Ready returns nil when every check holds, else the reasons, one per line.
func (a *Admin) Ready() error {
	if a.draining.Load() {
		return fmt.Errorf("shutting down")
	}
	var reasons []string
	for _, c := range a.Checks {
		if err := c.Err(); err != nil {
			reasons = append(reasons, c.Name+": "+err.Error())
		}
	}
	if len(reasons) > 0 {
		return fmt.Errorf("%s", strings.Join(reasons, "\n"))
	}
	return nil
}

// Handler returns the admin endpoints:
//
//	GET /ready    200 "ready", or 503 with the reasons, one per line
//	GET /live     200 while the process serves HTTP
//	GET /metrics  Prometheus text format 0.0.4
//	/debug/pprof/ the runtime profiles, to loopback peers only (else 403)
func (a *Admin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := a.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready:\n%s\n", err)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		for _, m := range a.Metrics {
			if err := m.WriteMetrics(w); err != nil {
				a.Logger.Warn("writing metrics", "error", err)
				return
			}
		}
	})
	mux.Handle("/debug/pprof/", loopbackOnly(http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/cmdline", loopbackOnly(http.HandlerFunc(pprof.Cmdline)))
	mux.Handle("/debug/pprof/profile", loopbackOnly(http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/symbol", loopbackOnly(http.HandlerFunc(pprof.Symbol)))
	mux.Handle("/debug/pprof/trace", loopbackOnly(http.HandlerFunc(pprof.Trace)))
	return mux
}

// loopbackOnly refuses peers that are not on loopback: profiles reveal
// memory contents and cost CPU.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "pprof is served to loopback peers only", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
