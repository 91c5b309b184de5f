// Package inject is `meshctl inject` and `meshctl uninject`: the CLI over
// the lossless transform of internal/inject.
package inject

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/meshctl/mesh/internal/cli/command"
	transform "github.com/meshctl/mesh/internal/inject"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/version"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Options are the flags of `meshctl inject`.
type Options struct {
	Factory *command.Factory
	IO
	// NativeSidecar asks for the proxy as a native sidecar;
	// NativeSidecarSet says the flag was given, so that it overrides the
	// mesh's configuration either way.
	NativeSidecar    bool
	NativeSidecarSet bool
	// IgnoreCluster injects with the built-in defaults and trusts
	// --native-sidecar without asking the cluster.
	IgnoreCluster bool
	// TrustAnchorsFile is a PEM bundle of the mesh's trust anchors, in
	// place of the cluster's trust-anchors ConfigMap; TrustDomain replaces
	// the MeshConfig's trust domain. Both are what the proxy needs to
	// verify the controller that issues its identity.
	TrustAnchorsFile string
	TrustDomain      string
	// KubernetesVersion is the cluster's version, instead of asking it;
	// it decides whether Jobs get a native sidecar.
	KubernetesVersion string
}

// NewCmd returns `meshctl inject`; runF replaces the run function in tests.
func NewCmd(f *command.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{Factory: f}
	cmd := &cobra.Command{
		Use:   "inject [FILE|DIR|URL|-]...",
		Short: "Add the mesh's proxy to the workloads of Kubernetes manifests",
		Long: `Add the mesh's sidecar proxy to every Pod, Deployment, StatefulSet,
DaemonSet, ReplicaSet, ReplicationController, Job and CronJob of the given
manifests (files, directories, https URLs, or - for standard input) and print
the result. Everything else in the manifests, comments and formatting
included, is left byte for byte; injecting twice changes nothing, and
meshctl uninject gives back the original.

The proxy's defaults, the mesh's trust domain and its trust anchors come
from the cluster (the MeshConfig and the trust-anchors ConfigMap in
--mesh-namespace). --ignore-cluster uses the built-in defaults instead, and
then needs --trust-anchors (and --trust-domain unless it is cluster.local).
Workloads that use the host's network, that opted out, that already carry
another mesh's proxy, or that live in a control-plane namespace are left as
they are. A report, one line per workload, goes to standard error.

On any error nothing is written, so a pipe into kubectl applies nothing.`,
		Example: `  meshctl inject deploy.yaml | kubectl apply -f -
  kubectl get deploy -o yaml | meshctl inject - | kubectl apply -f -
  meshctl inject --in-place --ignore-cluster --trust-anchors ca.crt k8s/
  meshctl inject https://example.com/app.yaml --report-format json`,
		Args: command.Args(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Inputs = args
			opts.Stdin = f.Streams.In
			opts.NativeSidecarSet = cmd.Flags().Changed("native-sidecar")
			if err := opts.validate(); err != nil {
				return command.Usage(err)
			}
			if v := opts.KubernetesVersion; v != "" {
				if _, err := utilversion.ParseGeneric(v); err != nil {
					return command.Usage(fmt.Errorf("invalid --kubernetes-version %q: %w", v, err))
				}
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return Run(cmd.Context(), opts)
		},
	}
	addIOFlags(cmd, &opts.IO)
	cmd.Flags().BoolVar(&opts.NativeSidecar, "native-sidecar", false, "run the proxy as a native sidecar (an init container with restartPolicy Always; Kubernetes 1.29 or later)")
	cmd.Flags().BoolVar(&opts.IgnoreCluster, "ignore-cluster", false, "do not read the mesh's configuration from the cluster: use the built-in defaults")
	cmd.Flags().StringVar(&opts.TrustAnchorsFile, "trust-anchors", "", "PEM `FILE` of the mesh's trust anchors, instead of the cluster's "+wellknown.TrustAnchorsName+" ConfigMap (required with --ignore-cluster)")
	cmd.Flags().StringVar(&opts.TrustDomain, "trust-domain", "", "the mesh's trust domain, instead of the MeshConfig's (with --ignore-cluster: cluster.local)")
	cmd.Flags().StringVar(&opts.KubernetesVersion, "kubernetes-version", "", "the cluster's Kubernetes version (e.g. 1.30), instead of asking it: Jobs and CronJobs get a native sidecar from 1.29 on, and when the version is unknown (with a warning)")
	return cmd
}

func addIOFlags(cmd *cobra.Command, o *IO) {
	cmd.Flags().StringVarP(&o.Output, "output", "o", "yaml", "output format: yaml (each document kept in its own syntax) or json")
	cmd.Flags().BoolVarP(&o.InPlace, "in-place", "i", false, "rewrite the files instead of printing them; no file is changed unless all succeed")
	cmd.Flags().StringVar(&o.ReportFormat, "report-format", "text", "format of the report on standard error: text or json")
}

// Run injects every input and writes the results.
func Run(ctx context.Context, opts *Options) error {
	ins, err := opts.read(ctx)
	if err != nil {
		return err
	}
	settings, err := opts.settings(ctx)
	if err != nil {
		return err
	}
	// A Namespace document opts its workloads in or out wherever they are
	// among the inputs, as kubectl apply of all of them would see it.
	settings.Namespaces = map[string]string{}
	for _, in := range ins {
		labels, err := transform.NamespaceLabels(in.data)
		if err != nil {
			return fmt.Errorf("%s: %w", in.name, err)
		}
		for k, v := range labels {
			settings.Namespaces[k] = v
		}
	}
	results, err := transformAll(ins, func(b []byte) ([]byte, []transform.Report, error) {
		return transform.Inject(b, settings)
	})
	if err != nil {
		return err
	}
	return opts.write(opts.Factory.Streams, results)
}

// settings are the mesh's proxy defaults and identity: from the cluster's
// MeshConfig and trust-anchors ConfigMap, or built in with --ignore-cluster,
// the flags overriding either.
func (o *Options) settings(ctx context.Context) (transform.Settings, error) {
	ns := o.Factory.MeshNamespace
	v := version.Get().Version
	var anchors []string
	if o.TrustAnchorsFile != "" {
		b, err := os.ReadFile(o.TrustAnchorsFile)
		if err != nil {
			return transform.Settings{}, fmt.Errorf("reading --trust-anchors: %w", err)
		}
		if anchors, err = transform.ParseTrustAnchors(b); err != nil {
			return transform.Settings{}, fmt.Errorf("%s: %w", o.TrustAnchorsFile, err)
		}
	}
	if o.IgnoreCluster {
		if anchors == nil {
			return transform.Settings{}, command.Usage(fmt.Errorf("--ignore-cluster needs --trust-anchors FILE: the proxy verifies the controller against the mesh's trust anchors (kubectl -n %s get configmap %s -o jsonpath='{.data.%s}' prints them)",
				ns, wellknown.TrustAnchorsName, strings.ReplaceAll(transform.TrustAnchorsKey, ".", `\.`)))
		}
		s := transform.NewSettings(meshconfig.Default(wellknown.ProxyImage+":"+v), ns, v)
		s.NativeSidecar = o.NativeSidecar
		s.TrustAnchors = anchors
		s.KubernetesVersion = o.KubernetesVersion
		if o.TrustDomain != "" {
			s.TrustDomain = o.TrustDomain
		}
		return s, nil
	}
	hint := "; use --ignore-cluster with --trust-anchors FILE to inject with the built-in defaults"
	spec, err := o.meshConfig(ctx)
	if err != nil {
		return transform.Settings{}, fmt.Errorf("reading the mesh's configuration from namespace %s: %w%s", ns, err, hint)
	}
	if anchors == nil {
		if anchors, err = o.trustAnchors(ctx); err != nil {
			return transform.Settings{}, fmt.Errorf("reading the mesh's trust anchors from namespace %s: %w; pass --trust-anchors FILE", ns, err)
		}
	}
	s := transform.NewSettings(spec, ns, v)
	s.TrustAnchors = anchors
	if o.TrustDomain != "" {
		s.TrustDomain = o.TrustDomain
	}
	if o.NativeSidecarSet {
		s.NativeSidecar = o.NativeSidecar
	}
	s.KubernetesVersion = o.KubernetesVersion
	if s.KubernetesVersion == "" {
		// Unknown if the cluster does not say: Jobs then get the native
		// sidecar, with a warning.
		s.KubernetesVersion, _ = o.serverVersion()
	}
	if s.NativeSidecar {
		if err := checkNativeSidecars(s.KubernetesVersion); err != nil {
			return transform.Settings{}, err
		}
	}
	return s, nil
}

func (o *Options) serverVersion() (string, error) {
	kube, err := o.Factory.Clientset()
	if err != nil {
		return "", err
	}
	info, err := kube.Discovery().ServerVersion()
	if err != nil {
		return "", err
	}
	return info.GitVersion, nil
}

// trustAnchors reads the trust-anchors ConfigMap that install writes.
func (o *Options) trustAnchors(ctx context.Context) ([]string, error) {
	kube, err := o.Factory.Clientset()
	if err != nil {
		return nil, err
	}
	cm, err := kube.CoreV1().ConfigMaps(o.Factory.MeshNamespace).Get(ctx, wellknown.TrustAnchorsName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("ConfigMap %s not found", wellknown.TrustAnchorsName)
	}
	if err != nil {
		return nil, err
	}
	return transform.ParseTrustAnchors([]byte(cm.Data[transform.TrustAnchorsKey]))
}

func (o *Options) meshConfig(ctx context.Context) (meshconfig.Spec, error) {
	dyn, err := o.Factory.Dynamic()
	if err != nil {
		return meshconfig.Spec{}, err
	}
	u, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(o.Factory.MeshNamespace).Get(ctx, wellknown.MeshConfigName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return meshconfig.Spec{}, errors.New("the mesh is not installed there (MeshConfig \"mesh\" not found)")
	}
	if err != nil {
		return meshconfig.Spec{}, err
	}
	var mc meshconfig.MeshConfig
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mc); err != nil {
		return meshconfig.Spec{}, fmt.Errorf("decoding MeshConfig: %w", err)
	}
	if err := mc.Spec.Validate(); err != nil {
		return meshconfig.Spec{}, fmt.Errorf("invalid MeshConfig: %w", err)
	}
	return mc.Spec, nil
}

// checkNativeSidecars refuses native sidecars on clusters older than 1.29,
// where the API server would drop restartPolicy and the proxy would block
// the pod's start as an init container that never ends.
func checkNativeSidecars(kubernetesVersion string) error {
	v, err := utilversion.ParseGeneric(kubernetesVersion)
	if err != nil {
		return fmt.Errorf("checking the cluster's version for --native-sidecar: %q: %w", kubernetesVersion, err)
	}
	if v.LessThan(transform.NativeSidecarVersion) {
		return command.Refused(fmt.Errorf("native sidecars need Kubernetes 1.29 or later; the cluster runs %s: inject without --native-sidecar", kubernetesVersion))
	}
	return nil
}
