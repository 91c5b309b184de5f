package command

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
)

// NoKubeconfigError says that no cluster was named anywhere client-go looks.
// Without it client-go falls back to http://localhost:8080, and the user
// reads "connection refused" about a server they never named.
type NoKubeconfigError struct {
	// Looked lists where meshctl looked, in order, and what it found.
	Looked []string
}

func (e *NoKubeconfigError) Error() string {
	return "no kubeconfig found; looked at:\n  " + strings.Join(e.Looked, "\n  ") +
		"\nname a cluster with --kubeconfig or --context, set KUBECONFIG, or create ~/.kube/config (kind and minikube write it)"
}

// findKubeconfig returns a NoKubeconfigError when neither the flags, nor
// KUBECONFIG, nor ~/.kube/config, nor the in-cluster environment name a
// cluster; it mirrors the order in which client-go's loader looks.
func (f *Factory) findKubeconfig() error {
	getenv := f.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	kf := f.KubeFlags
	if kf.KubeConfig != nil && *kf.KubeConfig != "" {
		if _, err := os.Stat(*kf.KubeConfig); err != nil {
			return fmt.Errorf("reading the kubeconfig given by --kubeconfig: %w", err)
		}
		return nil
	}
	if kf.APIServer != nil && *kf.APIServer != "" {
		return nil
	}
	var looked []string
	if env := getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		for _, p := range filepath.SplitList(env) {
			if exists(p) {
				return nil
			}
			looked = append(looked, "KUBECONFIG: "+p+" (does not exist)")
		}
	} else {
		looked = append(looked, "KUBECONFIG (not set)")
		if exists(clientcmd.RecommendedHomeFile) {
			return nil
		}
		looked = append(looked, clientcmd.RecommendedHomeFile+" (does not exist)")
	}
	if getenv("KUBERNETES_SERVICE_HOST") != "" && getenv("KUBERNETES_SERVICE_PORT") != "" {
		return nil
	}
	looked = append(looked, "in-cluster configuration (KUBERNETES_SERVICE_HOST not set: not running in a pod)")
	return &NoKubeconfigError{Looked: looked}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil || !errors.Is(err, os.ErrNotExist)
}
