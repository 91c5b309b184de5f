// Package admin is the proxy's admin API: health, metrics and state for
// anyone who can reach the admin port (the kubelet's probes, Prometheus,
// meshctl), and mutating endpoints and pprof only for POST requests from
// loopback peers, that is from inside the pod. The documents are the
// versioned types of internal/adminapi.
package admin

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"time"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// Proxy is what the admin API needs from the data plane.
type Proxy interface {
	Ready() (bool, string)
	Draining() bool
	Listeners() []adminapi.Listener
	Gauges() []metrics.Gauge
	Drain()
	Shutdown()
}

// Options are the admin API's dependencies; all are required except
// Reload, without which POST /reload answers 404.
type Options struct {
	Proxy   Proxy
	Config  *config.Store
	Metrics *metrics.Registry
	// Level is the log level that POST /logging changes.
	Level *slog.LevelVar
	// Reload reloads the configuration file.
	Reload func() (*config.Table, error)
	// Mesh is the link to the controller; nil in local mode, where
	// /identity and /discovery answer 404.
	Mesh Mesh
	// Listener, when set, is the admin listener, whose refusals /metrics
	// counts.
	Listener *Listener
	Log      *slog.Logger
}

// Mesh is what the admin API shows of the proxy's link to the controller:
// metadata only, never key material.
type Mesh interface {
	Ready() (bool, string)
	Identity() adminapi.Identity
	Discovery() adminapi.Discovery
	Gauges() []metrics.Gauge
}

// httpError is the one error type of the handlers; it becomes an
// adminapi.Error body.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, msg string) error { return &httpError{code: code, msg: msg} }

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// route is one endpoint: its method and whether only loopback peers may
// call it.
type route struct {
	method   string
	loopback bool
	h        handlerFunc
}

// NewHandler returns the admin API.
func NewHandler(o Options) http.Handler {
	a := &api{o: o}
	routes := map[string]route{
		"/ready":   {http.MethodGet, false, a.ready},
		"/live":    {http.MethodGet, false, a.live},
		"/metrics": {http.MethodGet, false, a.metrics},
		// What the proxy holds (its services, endpoints and their
		// identities, certificate metadata) maps the mesh for whoever
		// asks: only loopback peers get it, which includes meshctl
		// through a port-forward. The network gets health and metrics.
		"/config_dump": {http.MethodGet, true, a.configDump},
		"/endpoints":   {http.MethodGet, true, a.endpoints},
		"/listeners":   {http.MethodGet, true, a.listeners},
		"/identity":    {http.MethodGet, true, a.identity},
		"/discovery":   {http.MethodGet, true, a.discovery},
		"/logging":     {http.MethodPost, true, a.logging},
		"/drain":       {http.MethodPost, true, a.drain},
		"/shutdown":    {http.MethodPost, true, a.shutdown},
		"/reload":      {http.MethodPost, true, a.reload},
	}
	pprofRoute := route{http.MethodPost, true, func(w http.ResponseWriter, r *http.Request) error {
		switch name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/"); name {
		case "profile":
			pprof.Profile(w, r)
		case "trace":
			pprof.Trace(w, r)
		case "symbol":
			pprof.Symbol(w, r)
		case "cmdline":
			pprof.Cmdline(w, r)
		case "":
			pprof.Index(w, r)
		default:
			pprof.Handler(name).ServeHTTP(w, r)
		}
		return nil
	}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := routes[r.URL.Path]
		if !ok && strings.HasPrefix(r.URL.Path, "/debug/pprof/") {
			rt, ok = pprofRoute, true
		}
		var err error
		switch {
		case !ok:
			err = errorf(http.StatusNotFound, "no such endpoint: "+r.URL.Path)
		case rt.loopback && !fromLoopback(r):
			err = errorf(http.StatusForbidden, r.URL.Path+" answers only to loopback peers")
		case r.Method != rt.method && !(rt.method == http.MethodGet && r.Method == http.MethodHead):
			w.Header().Set("Allow", rt.method)
			err = errorf(http.StatusMethodNotAllowed, r.URL.Path+" takes "+rt.method)
		default:
			err = rt.h(w, r)
		}
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) {
				he = &httpError{code: http.StatusInternalServerError, msg: err.Error()}
			}
			writeJSON(w, he.code, adminapi.Error{APIVersion: adminapi.APIVersion, Status: he.code, Error: he.msg})
		}
	})
}

// fromLoopback reports whether the peer is on loopback. The peer address
// is the TCP peer's, never a header a client could set.
func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

type api struct{ o Options }

func (a *api) ready(w http.ResponseWriter, _ *http.Request) error {
	ok, reason := a.o.Proxy.Ready()
	if ok && a.o.Mesh != nil {
		// A meshed proxy without a certificate or the controller's first
		// push could not serve mesh TLS: not ready yet. Once ready, losing
		// the controller does not make it unready (the last configuration
		// and certificate keep serving).
		ok, reason = a.o.Mesh.Ready()
	}
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	return writeJSON(w, code, adminapi.Ready{APIVersion: adminapi.APIVersion, Ready: ok, Reason: reason})
}

// live answers 200 as long as the process serves HTTP: a draining proxy is
// still alive and must not be restarted by the liveness probe.
func (a *api) live(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, adminapi.Ready{APIVersion: adminapi.APIVersion, Ready: true})
}

func (a *api) metrics(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	g := a.o.Proxy.Gauges()
	if a.o.Mesh != nil {
		g = append(g, a.o.Mesh.Gauges()...)
	}
	if a.o.Listener != nil {
		g = append(g, metrics.Gauge{Name: "meshproxy_admin_connections_refused_total", Type: "counter",
			Help: "Admin API connections closed at once because MaxConnections were open.", Value: float64(a.o.Listener.Refused())})
	}
	ok, failed := a.o.Config.Reloads()
	g = append(g,
		metrics.Gauge{Name: "meshproxy_config_reloads_total", Help: "Configuration reloads, by result.", Type: "counter", Labels: [][2]string{{"result", "ok"}}, Value: float64(ok)},
		metrics.Gauge{Name: "meshproxy_config_reloads_total", Type: "counter", Labels: [][2]string{{"result", "failed"}}, Value: float64(failed)},
	)
	if s := a.o.Config.Load(); s != nil {
		g = append(g, metrics.Gauge{Name: "meshproxy_config_info", Help: "The configuration in force, by version; always 1.", Labels: [][2]string{{"version", s.Version()}}, Value: 1})
	}
	return a.o.Metrics.WriteText(w, g)
}

func (a *api) configDump(w http.ResponseWriter, _ *http.Request) error {
	s := a.o.Config.Load()
	if s == nil {
		return errorf(http.StatusServiceUnavailable, "no configuration loaded")
	}
	return writeJSON(w, http.StatusOK, adminapi.ConfigDump{
		APIVersion: adminapi.APIVersion,
		Version:    s.Version(),
		Source:     s.Source,
		LoadedAt:   s.LoadedAt.UTC().Format(time.RFC3339),
		Config:     s.Config,
	})
}

func (a *api) endpoints(w http.ResponseWriter, _ *http.Request) error {
	s := a.o.Config.Load()
	if s == nil {
		return errorf(http.StatusServiceUnavailable, "no configuration loaded")
	}
	out := adminapi.Endpoints{APIVersion: adminapi.APIVersion, ConfigVersion: s.Version(), Services: []adminapi.ServiceEndpoints{}}
	for _, t := range s.Targets() {
		se := adminapi.ServiceEndpoints{Name: t.Name, Namespace: t.Namespace, Port: t.Port, Endpoints: []adminapi.Endpoint{}}
		for _, e := range t.Endpoints {
			// The in-flight count is the registry's: it spans every table
			// that named the endpoint, not only this one.
			se.Endpoints = append(se.Endpoints, adminapi.Endpoint{Address: e.Address(), Identity: e.Key().Identity, Weight: e.Weight, Active: e.InFlight()})
		}
		out.Services = append(out.Services, se)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *api) identity(w http.ResponseWriter, _ *http.Request) error {
	if a.o.Mesh == nil {
		return errorf(http.StatusNotFound, "no mesh identity: the proxy runs without a controller")
	}
	return writeJSON(w, http.StatusOK, a.o.Mesh.Identity())
}

func (a *api) discovery(w http.ResponseWriter, _ *http.Request) error {
	if a.o.Mesh == nil {
		return errorf(http.StatusNotFound, "no discovery: the proxy runs without a controller")
	}
	return writeJSON(w, http.StatusOK, a.o.Mesh.Discovery())
}

func (a *api) listeners(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, adminapi.Listeners{APIVersion: adminapi.APIVersion, Draining: a.o.Proxy.Draining(), Listeners: a.o.Proxy.Listeners()})
}

func (a *api) logging(w http.ResponseWriter, r *http.Request) error {
	level := r.URL.Query().Get("level")
	if level == "" {
		return errorf(http.StatusBadRequest, "missing query parameter level: one of debug, info, warn, error")
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return errorf(http.StatusBadRequest, "invalid level "+level+": one of debug, info, warn, error")
	}
	a.o.Level.Set(l)
	a.o.Log.Info("log level changed", "level", l.String())
	return writeJSON(w, http.StatusOK, adminapi.Status{APIVersion: adminapi.APIVersion, Message: "log level set", LogLevel: strings.ToLower(l.String())})
}

func (a *api) drain(w http.ResponseWriter, _ *http.Request) error {
	a.o.Proxy.Drain()
	return writeJSON(w, http.StatusAccepted, adminapi.Status{APIVersion: adminapi.APIVersion, Message: "draining; the proxy exits when drained"})
}

func (a *api) shutdown(w http.ResponseWriter, _ *http.Request) error {
	a.o.Proxy.Shutdown()
	return writeJSON(w, http.StatusAccepted, adminapi.Status{APIVersion: adminapi.APIVersion, Message: "shutting down"})
}

func (a *api) reload(w http.ResponseWriter, _ *http.Request) error {
	if a.o.Reload == nil {
		return errorf(http.StatusNotFound, "reload is not available")
	}
	s, err := a.o.Reload()
	if err != nil {
		return errorf(http.StatusBadRequest, err.Error())
	}
	return writeJSON(w, http.StatusOK, adminapi.Status{APIVersion: adminapi.APIVersion, Message: "configuration reloaded", ConfigVersion: s.Version()})
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
