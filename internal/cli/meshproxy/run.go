package meshproxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/incluster"
	"github.com/meshctl/mesh/internal/proxy"
	"github.com/meshctl/mesh/internal/proxy/admin"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/proxy/controlplane"
	"github.com/meshctl/mesh/internal/proxy/metrics"
	"github.com/meshctl/mesh/internal/version"
	"github.com/meshctl/mesh/internal/wellknown"
)

// RunOptions are the flags of `meshproxy run`.
type RunOptions struct {
	ConfigPath   string
	AdminAddress string
	Logging      incluster.Logging
	AccessLog    bool
	DrainDelay   time.Duration
	DrainTimeout time.Duration
	GCPercent    int
	// The pod's namespace, ServiceAccount and name, which injection
	// passes in the environment (downward API): the ServiceAccount is the
	// workload's identity when the configuration names a controller.
	PodNamespace   string
	ServiceAccount string
	PodName        string
}

func newRunCmd(s incluster.Streams) *cobra.Command {
	o := &RunOptions{}
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the sidecar proxy",
		Long: `Run the sidecar proxy: the outbound and inbound listeners that the
interception rules of "meshproxy init" redirect to, and the admin API.

The proxy drains on SIGTERM or SIGINT (and on POST /drain): /ready turns 503,
the listeners close after --drain-delay, in-flight requests finish for up to
--drain-timeout, then it exits 0. SIGHUP (or POST /reload from loopback)
reloads the configuration file without dropping connections.

When the configuration names a controller, the proxy gets its mesh
certificate for the pod's ServiceAccount (--service-account), learns the
services it talks to from the controller, and speaks mutual TLS with the
proxies of meshed endpoints. /ready answers 200 once it holds a certificate
and the controller's first configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRun(cmd.Context(), o, s)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ConfigPath, "config", "", "path of the configuration file (YAML or JSON); required")
	f.StringVar(&o.AdminAddress, "admin-address", ":"+strconv.Itoa(wellknown.ProxyAdminPort), "address of the admin API")
	o.Logging.AddFlags(f, "log level: debug, info, warn or error (POST /logging?level= changes it at run time)")
	f.BoolVar(&o.AccessLog, "access-log", false, "write one JSON line per request and TCP connection to stdout")
	f.DurationVar(&o.DrainDelay, "drain-delay", 0, "how long the listeners keep accepting after a drain begins")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", 20*time.Second, "how long in-flight requests may take to finish once the listeners close")
	f.IntVar(&o.GCPercent, "gc-percent", 50, "Go garbage collector target percentage (as GOGC); lower trades CPU for memory, -1 keeps the runtime's setting")
	f.StringVar(&o.PodNamespace, "pod-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the pod, for its identity (default $POD_NAMESPACE, else the configuration's workload.namespace)")
	f.StringVar(&o.ServiceAccount, "service-account", os.Getenv("SERVICE_ACCOUNT"), "ServiceAccount of the pod, its identity (default $SERVICE_ACCOUNT)")
	f.StringVar(&o.PodName, "pod-name", os.Getenv("POD_NAME"), "name of the pod, shown to the controller (default $POD_NAME)")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func runRun(ctx context.Context, o *RunOptions, s incluster.Streams) error {
	h, level, err := o.Logging.Handler(s.ErrOut)
	if err != nil {
		return err
	}
	if o.DrainDelay < 0 || o.DrainTimeout < 0 {
		return errors.New("--drain-delay and --drain-timeout must not be negative")
	}
	log := slog.New(h)
	if o.GCPercent >= 0 {
		// The sidecar's heap is small and short-lived; collecting at 50%
		// growth instead of 100% measured 14 MB instead of 17 MB of RSS at
		// 1000 req/s, for a CPU cost too small to see in latency.
		debug.SetGCPercent(o.GCPercent)
	}

	store := &config.Store{}
	snap, err := config.Load(o.ConfigPath)
	if err != nil {
		return err
	}
	store.Swap(snap)

	var accessLog io.Writer
	if o.AccessLog {
		accessLog = s.Out
	}
	reg := metrics.New()
	popts := proxy.Options{
		Config:       store,
		Metrics:      reg,
		Log:          log,
		AccessLog:    accessLog,
		DrainDelay:   o.DrainDelay,
		DrainTimeout: o.DrainTimeout,
	}
	var link *controlplane.Link
	if b := snap.Config.Controller; b != nil {
		link, err = controlplane.New(controlplane.Options{
			Bootstrap:      *b,
			Namespace:      cmp.Or(o.PodNamespace, snap.Config.Workload.Namespace),
			ServiceAccount: o.ServiceAccount,
			Pod:            o.PodName,
			ProxyVersion:   version.Get().Version,
			Store:          store,
			Log:            log,
		})
		if err != nil {
			return err
		}
		popts.ClientTLS, popts.ServerTLS, popts.Resolve = link.ClientTLS, link.ServerTLS, link.Resolve
	}
	p, err := proxy.New(popts)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	if link != nil {
		go func() {
			if err := link.Run(ctx); err != nil {
				log.Error("link to the controller ended", "error", err)
			}
		}()
	}
	reload := func() (*config.Table, error) {
		var snap *config.Table
		var err error
		if link != nil {
			snap, err = store.ReloadPushed(o.ConfigPath, link.Set())
		} else {
			snap, err = store.Reload(o.ConfigPath)
		}
		if err != nil {
			log.Error("reloading configuration", "error", err)
			return nil, err
		}
		log.Info("configuration reloaded", "config_version", snap.Version())
		return snap, nil
	}
	adminLn, err := proxy.Listen(ctx, o.AdminAddress)
	if err != nil {
		p.Shutdown()
		_ = p.Serve(ctx)
		return fmt.Errorf("binding admin listener: %w", err)
	}
	bounded := admin.NewListener(adminLn, admin.MaxConnections)
	adminOpts := admin.Options{Proxy: p, Config: store, Metrics: reg, Level: level, Reload: reload, Log: log, Listener: bounded}
	if link != nil {
		adminOpts.Mesh = link
	}
	adminSrv := &http.Server{
		Handler:           admin.NewHandler(adminOpts),
		ReadHeaderTimeout: 5 * time.Second,
		// Probes and scrapes come every few seconds; a keep-alive
		// connection held longer only ties up one of the few slots.
		IdleTimeout:    10 * time.Second,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(h, slog.LevelDebug),
	}
	go func() {
		if err := adminSrv.Serve(bounded); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("serving admin API", "error", err)
		}
	}()
	log.Info("meshproxy running", "version", version.Get().Version, "admin", adminLn.Addr().String(), "config", o.ConfigPath, "config_version", snap.Version())

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				_, _ = reload()
			case <-ctx.Done():
				return
			}
		}
	}()

	err = p.Serve(ctx)
	shutCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = adminSrv.Shutdown(shutCtx)
	log.Info("meshproxy stopped")
	return err
}
