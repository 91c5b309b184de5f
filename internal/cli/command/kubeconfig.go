package command

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// checkNames refuses --context, --cluster or --user naming nothing in the
// kubeconfig: a mistake on the command line (exit 2), listing the names
// there are.
func (f *Factory) checkNames() error {
	kf := f.KubeFlags
	raw, err := kf.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil // ToRESTConfig reports it.
	}
	for _, n := range []struct {
		flag  string
		value *string
		names []string
	}{
		{"--context", kf.Context, sortedKeys(raw.Contexts)},
		{"--cluster", kf.ClusterName, sortedKeys(raw.Clusters)},
		{"--user", kf.AuthInfoName, sortedKeys(raw.AuthInfos)},
	} {
		if n.value == nil || *n.value == "" || slices.Contains(n.names, *n.value) {
			continue
		}
		return UsageErrorf("%s %q: the kubeconfig has no such entry; it has: %s", n.flag, *n.value, strings.Join(n.names, ", "))
	}
	return nil
}
