// Package command holds what every meshctl command is built from: the
// Factory (streams, cluster access, the mesh's namespace) and the typed errors
// that become exit codes.
package command

import (
	"fmt"
	"io"
	"os"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshctl/mesh/internal/wellknown"
)

// Streams are the standard streams of a command. Data goes to Out; progress,
// warnings and reports go to ErrOut, so that `meshctl ... | kubectl apply -f -`
// only ever sees data.
type Streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// OutIsTerminal and ErrOutIsTerminal say whether styling and live
	// progress are wanted on each stream; Colour is false under NO_COLOR.
	OutIsTerminal    bool
	ErrOutIsTerminal bool
	Colour           bool
}

// Factory builds the dependencies of commands lazily, so that a command that
// needs no cluster (inject, completion, install --dry-run) never touches a
// kubeconfig.
type Factory struct {
	Streams Streams
	// KubeFlags are kubectl's flags (--kubeconfig, --context, --as, ...),
	// registered by AddClusterFlags on each command that talks to a
	// cluster, and on no other.
	KubeFlags *genericclioptions.ConfigFlags
	// MeshNamespace is where the control plane lives (--mesh-namespace).
	MeshNamespace string
	// Verbose shows client-go's warnings and errors (--verbose).
	Verbose bool
	// Getenv reads the environment where client-go does (KUBECONFIG,
	// in-cluster variables), for the message when no kubeconfig is found;
	// nil means os.Getenv.
	Getenv func(string) string

	once      sync.Once
	config    *rest.Config
	configErr error
}

// NewFactory returns a Factory over the process's streams.
func NewFactory(s Streams) *Factory {
	flags := genericclioptions.NewConfigFlags(true)
	// Every object the mesh renders names its namespace; kubectl's default
	// namespace from the kubeconfig must not leak into the mesh's.
	return &Factory{Streams: s, KubeFlags: flags, MeshNamespace: wellknown.DefaultMeshNamespace}
}

// RESTConfig returns the client configuration from the kube flags and
// kubeconfig, with a client-side rate limit fit for a CLI that lists and
// applies a few dozen objects.
func (f *Factory) RESTConfig() (*rest.Config, error) {
	f.once.Do(func() {
		if err := f.findKubeconfig(); err != nil {
			f.configErr = err
			return
		}
		if err := f.checkNames(); err != nil {
			f.configErr = err
			return
		}
		cfg, err := f.KubeFlags.ToRESTConfig()
		if err != nil {
			f.configErr = fmt.Errorf("loading the Kubernetes client configuration: %w", err)
			// --context or --cluster naming nothing in the kubeconfig, or a
			// kubeconfig that does not hold together, is invalid input.
			if clientcmd.IsConfigurationInvalid(err) {
				f.configErr = Usage(f.configErr)
			}
			return
		}
		cfg.QPS, cfg.Burst = 50, 100
		cfg.UserAgent = "meshctl"
		f.config = cfg
	})
	return f.config, f.configErr
}

// Clientset returns a typed client.
func (f *Factory) Clientset() (kubernetes.Interface, error) {
	cfg, err := f.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// Dynamic returns a dynamic client.
func (f *Factory) Dynamic() (dynamic.Interface, error) {
	cfg, err := f.RESTConfig()
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfig(cfg)
}

// WorkloadNamespace is -n/--namespace, the workloads' namespace; given is
// false when the flag was not set, and the command's default (often every
// namespace) applies.
func (f *Factory) WorkloadNamespace() (ns string, given bool) {
	if f.KubeFlags.Namespace != nil && *f.KubeFlags.Namespace != "" {
		return *f.KubeFlags.Namespace, true
	}
	return "", false
}

// RESTMapper returns a discovery-backed mapper that can be reset after CRDs
// are created.
func (f *Factory) RESTMapper() (meta.ResettableRESTMapper, error) {
	if err := f.findKubeconfig(); err != nil {
		return nil, err
	}
	m, err := f.KubeFlags.ToRESTMapper()
	if err != nil {
		return nil, fmt.Errorf("discovering the cluster's API resources: %w", err)
	}
	rm, ok := m.(meta.ResettableRESTMapper)
	if !ok {
		return nil, fmt.Errorf("discovering the cluster's API resources: mapper %T cannot be reset", m)
	}
	return rm, nil
}

// ReadFile reads a file named on the command line, or standard input for "-".
func (f *Factory) ReadFile(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(f.Streams.In)
	}
	return os.ReadFile(name)
}
