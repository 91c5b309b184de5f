package command

import (
	"context"
	"sort"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Flags are registered per command, only where the command uses them: a flag
// offered and silently ignored (`meshctl version -n mesh` still reading
// meshctl-system) misleads more than a "unknown flag" error.

// AddClusterFlags registers kubectl's connection flags (--kubeconfig,
// --context, --as, --server, ...) and --verbose on a command that talks to
// a cluster. -n/--namespace is not among them: see AddWorkloadNamespaceFlag.
func (f *Factory) AddClusterFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	ns := f.KubeFlags.Namespace
	f.KubeFlags.Namespace = nil
	f.KubeFlags.AddFlags(fs)
	f.KubeFlags.Namespace = ns
	fs.BoolVarP(&f.Verbose, "verbose", "v", false, "show the Kubernetes client's warnings and errors (such as API discovery failures) on standard error")
	_ = cmd.RegisterFlagCompletionFunc("context", f.completeContexts)
	_ = cmd.RegisterFlagCompletionFunc("cluster", f.completeClusters)
	_ = cmd.RegisterFlagCompletionFunc("user", f.completeUsers)
}

// AddMeshNamespaceFlag registers --mesh-namespace, where the control plane
// lives, on a command that reads or changes the control plane.
func (f *Factory) AddMeshNamespaceFlag(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.MeshNamespace, "mesh-namespace", f.MeshNamespace, "namespace of the mesh's control plane")
	_ = cmd.RegisterFlagCompletionFunc("mesh-namespace", f.completeNamespaces)
}

// AddWorkloadNamespaceFlag registers -n/--namespace, the workloads'
// namespace as in kubectl, on a command that looks at workloads.
func (f *Factory) AddWorkloadNamespaceFlag(cmd *cobra.Command, usage string) {
	if f.KubeFlags.Namespace == nil {
		f.KubeFlags.Namespace = new(string)
	}
	cmd.Flags().StringVarP(f.KubeFlags.Namespace, "namespace", "n", "", usage)
	_ = cmd.RegisterFlagCompletionFunc("namespace", f.completeNamespaces)
}

// CompleteChoices completes a flag from a fixed list (output formats).
func CompleteChoices(choices ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return choices, cobra.ShellCompDirectiveNoFileComp
	}
}

// completionTimeout bounds how long completing a namespace may wait for the
// cluster: a shell that hangs on <Tab> is worse than no suggestion.
const completionTimeout = 2 * time.Second

func (f *Factory) completeNamespaces(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	cfg, err := f.RESTConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	// The completion process ends after this one list.
	cfg.Timeout = completionTimeout
	kube, err := f.Clientset()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, 0, len(list.Items))
	for _, ns := range list.Items {
		names = append(names, ns.Name)
	}
	sort.Strings(names)
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (f *Factory) completeContexts(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	raw, err := f.KubeFlags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return sortedKeys(raw.Contexts), cobra.ShellCompDirectiveNoFileComp
}

func (f *Factory) completeClusters(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	raw, err := f.KubeFlags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return sortedKeys(raw.Clusters), cobra.ShellCompDirectiveNoFileComp
}

func (f *Factory) completeUsers(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	raw, err := f.KubeFlags.ToRawKubeConfigLoader().RawConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return sortedKeys(raw.AuthInfos), cobra.ShellCompDirectiveNoFileComp
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
