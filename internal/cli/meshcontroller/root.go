// Package meshcontroller is the command tree of the meshcontroller binary,
// the mesh's control plane. It is a binary of its own, in the same image as
// meshproxy, so that client-go and the API machinery it needs are linked
// only here and not into the sidecar that runs in every pod.
package meshcontroller

import (
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/meshctl/mesh/internal/cli/incluster"
	"github.com/meshctl/mesh/internal/controller"
	"github.com/meshctl/mesh/internal/controller/webhook"
	"github.com/meshctl/mesh/internal/version"
	"github.com/meshctl/mesh/internal/wellknown"
)

// options holds the flag values of meshcontroller. The chart passes
// --mesh-namespace, --webhook-port, --admin-port, --webhook-tls-dir and
// --log-level; the others are for running outside a cluster and for tuning.
type options struct {
	MeshNamespace string
	WebhookPort   uint16
	AdminPort     uint16
	WebhookTLSDir string
	Logging       incluster.Logging
	Kubeconfig    string
	ShutdownDelay time.Duration
	// Identity issuance on the mesh API (0 turns it off).
	MeshAPIPort       uint16
	IdentityIssuerDir string
	TrustAnchorsDir   string
	// TrustDomain names the identities discovery announces.
	TrustDomain string
}

// NewRootCmd returns the meshcontroller command: run without a subcommand it
// runs the control plane; `version` prints the build.
func NewRootCmd(s incluster.Streams) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "meshcontroller",
		Short: "Run the control plane: the proxy injection webhook and the mesh configuration",
		Long: `Run the mesh's control plane. It keeps the MeshConfig "mesh" of the mesh
namespace current, serves the proxy injection webhook over HTTPS on
--webhook-port with the certificate in --webhook-tls-dir (re-read when the
files change), and serves /ready, /live, /metrics and, to loopback peers,
/debug/pprof/ on --admin-port. It is ready once a valid MeshConfig and the
certificate are loaded. On SIGTERM it fails readiness, keeps serving for
--shutdown-delay, finishes in-flight requests and exits.

Inside a cluster it uses the pod's ServiceAccount; --kubeconfig runs it
outside one.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runController(cmd, o, s)
		},
	}
	cmd.SetIn(s.In)
	cmd.SetOut(s.Out)
	cmd.SetErr(s.ErrOut)
	f := cmd.Flags()
	f.StringVar(&o.MeshNamespace, "mesh-namespace", wellknown.DefaultMeshNamespace, "namespace of the control plane and of its MeshConfig")
	f.Uint16Var(&o.WebhookPort, "webhook-port", wellknown.ControllerWebhookPort, "port of the injection webhook (HTTPS)")
	f.Uint16Var(&o.AdminPort, "admin-port", wellknown.ControllerAdminPort, "port of the admin endpoint: /ready, /live, /metrics, /debug/pprof/")
	f.StringVar(&o.WebhookTLSDir, "webhook-tls-dir", "/var/run/meshctl/webhook-tls", "directory holding the webhook's tls.crt and tls.key")
	f.Uint16Var(&o.MeshAPIPort, "meshapi-port", wellknown.ControllerMeshAPIPort, "port of the mesh API (HTTPS): identity issuance for proxies; 0 turns it off")
	f.StringVar(&o.IdentityIssuerDir, "identity-issuer-dir", "/var/run/meshctl/identity-issuer", "directory holding the identity issuer's tls.crt and tls.key")
	f.StringVar(&o.TrustAnchorsDir, "trust-anchors-dir", "/var/run/meshctl/trust-anchors", "directory holding the trust anchors, ca-bundle.crt")
	f.StringVar(&o.TrustDomain, "trust-domain", "cluster.local", "trust domain of the identities that discovery announces for endpoints (the MeshConfig's trustDomain)")
	o.Logging.AddFlags(f, "log level: debug, info, warn or error")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file to reach the API server with (default: the in-cluster ServiceAccount)")
	f.DurationVar(&o.ShutdownDelay, "shutdown-delay", 5*time.Second, "how long to keep serving with readiness failing after SIGTERM, so endpoints stop routing here first")
	cmd.AddCommand(incluster.NewVersionCmd("meshcontroller", s))
	return cmd
}

func (o *options) kubeConfig() (*rest.Config, error) {
	if o.Kubeconfig == "" {
		c, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("loading the in-cluster configuration (outside a cluster, pass --kubeconfig): %w", err)
		}
		return c, nil
	}
	c, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("loading --kubeconfig: %w", err)
	}
	return c, nil
}

func runController(cmd *cobra.Command, o *options, s incluster.Streams) error {
	h, _, err := o.Logging.Handler(s.ErrOut)
	if err != nil {
		return err
	}
	log := slog.New(h)
	// client-go logs through klog; send those lines to the same structured
	// stream instead of klog's own format.
	klog.SetSlogLogger(log.With("component", "client-go"))
	kube, err := o.kubeConfig()
	if err != nil {
		return err
	}
	clientset, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return fmt.Errorf("building the API client: %w", err)
	}
	opts := controller.Options{
		MeshNamespace:  o.MeshNamespace,
		WebhookAddress: ":" + strconv.Itoa(int(o.WebhookPort)),
		AdminAddress:   ":" + strconv.Itoa(int(o.AdminPort)),
		WebhookTLSDir:  o.WebhookTLSDir,
		Kube:           kube,
		Inject:         webhook.NewInjector(o.MeshNamespace, version.Get().Version, webhook.NewCluster(clientset, o.MeshNamespace, nil)),
		Logger:         log,
		ShutdownDelay:  o.ShutdownDelay,
		TrustDomain:    o.TrustDomain,
	}
	if o.MeshAPIPort != 0 {
		opts.MeshAPIAddress = ":" + strconv.Itoa(int(o.MeshAPIPort))
		opts.IdentityIssuerDir, opts.TrustAnchorsDir = o.IdentityIssuerDir, o.TrustAnchorsDir
	}
	c, err := controller.New(opts)
	if err != nil {
		return err
	}
	return c.Run(cmd.Context())
}
