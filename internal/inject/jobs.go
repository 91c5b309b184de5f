package inject

import (
	"fmt"

	"gopkg.in/yaml.v3"
	utilversion "k8s.io/apimachinery/pkg/util/version"
)

// NativeSidecarVersion is the first Kubernetes version whose API server and
// kubelet run init containers with restartPolicy Always as sidecars by
// default (beta and on in 1.29, GA in 1.33).
var NativeSidecarVersion = utilversion.MustParseGeneric("1.29.0")

// runsToCompletion reports whether w's pods are meant to finish: Jobs,
// CronJobs, and Pods that a Job created (as the webhook sees them).
func runsToCompletion(w *workload) bool {
	switch w.kind {
	case "Job", "CronJob":
		return true
	case "Pod":
		_, meta := mapGet(w.node, "metadata")
		_, owners := mapGet(meta, "ownerReferences")
		if owners == nil || owners.Kind != yaml.SequenceNode {
			return false
		}
		for _, o := range owners.Content {
			if scalar(o, "kind") == "Job" {
				return true
			}
		}
	}
	return false
}

// nativeFor says whether w's proxy runs as a native sidecar, and warns when
// the choice may not be what the workload needs. A classic sidecar never
// exits, so a Job's pod would never complete: Jobs get the native sidecar
// wherever the cluster has it.
func (s *Settings) nativeFor(w *workload) (native bool, warning string) {
	if s.NativeSidecar || !runsToCompletion(w) {
		return s.NativeSidecar, ""
	}
	if s.KubernetesVersion == "" {
		return true, fmt.Sprintf("the proxy runs as a native sidecar so that the %s can complete, assuming Kubernetes %s or later: the cluster's version is unknown", jobWord(w), NativeSidecarVersion)
	}
	v, err := utilversion.ParseGeneric(s.KubernetesVersion)
	if err != nil {
		return true, fmt.Sprintf("the proxy runs as a native sidecar so that the %s can complete, assuming Kubernetes %s or later: cannot read the cluster's version %q", jobWord(w), NativeSidecarVersion, s.KubernetesVersion)
	}
	if v.LessThan(NativeSidecarVersion) {
		return false, fmt.Sprintf("Kubernetes %s has no native sidecars: the proxy runs as a classic sidecar, which never exits, so the %s will not complete", s.KubernetesVersion, jobWord(w))
	}
	return true, ""
}

func jobWord(w *workload) string {
	if w.kind == "Pod" {
		return "Job's pod"
	}
	return w.kind
}
