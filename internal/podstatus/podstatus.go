// Package podstatus reads what the mesh needs to know of a pod object: why
// it is not ready, in the words that both `meshctl install --wait` (on
// timeout) and `meshctl check` print, and whether waiting longer can help;
// and whether a proxy serves it.
package podstatus

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshctl/mesh/internal/wellknown"
)

// stuckReasons are the waiting reasons that do not clear by waiting a few
// minutes.
var stuckReasons = map[string]bool{
	"ErrImagePull":               true,
	"ImagePullBackOff":           true,
	"InvalidImageName":           true,
	"CrashLoopBackOff":           true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
}

// Ready reports whether p's Ready condition is true.
func Ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Problem says why p is not ready, from the most specific fact Kubernetes
// gives: the scheduler's message, a container's waiting reason and message
// (with its last exit code when it has run before), a failed exit, a
// failing readiness probe, or the Ready condition. stuck reports a reason
// that waiting will not clear (an image that cannot be pulled, a crash
// loop, an unschedulable pod). Call it for a pod that is not Ready.
func Problem(p *corev1.Pod) (reason string, stuck bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return "cannot be scheduled: " + firstNonEmpty(c.Message, c.Reason), c.Reason == corev1.PodReasonUnschedulable
		}
	}
	if p.Spec.NodeName == "" {
		return "not scheduled yet", false
	}
	for _, cs := range p.Status.InitContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "PodInitializing" {
			return waiting("init container", cs, w), stuckReasons[w.Reason]
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return terminated("init container", cs.Name, t), false
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			return waiting("container", cs, cs.State.Waiting), stuckReasons[cs.State.Waiting.Reason]
		case cs.State.Terminated != nil:
			return terminated("container", cs.Name, cs.State.Terminated), false
		case !cs.Ready:
			return "container " + cs.Name + " is running but not ready (its readiness probe fails)", false
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status != corev1.ConditionTrue && (c.Reason != "" || c.Message != "") {
			return "not ready: " + firstNonEmpty(c.Message, c.Reason), false
		}
	}
	return strings.ToLower(string(p.Status.Phase)) + " and not ready", false
}

func waiting(what string, cs corev1.ContainerStatus, w *corev1.ContainerStateWaiting) string {
	msg := what + " " + cs.Name + " is waiting: " + w.Reason
	if m := strings.TrimSpace(w.Message); m != "" {
		msg += ": " + m
	}
	if last := cs.LastTerminationState.Terminated; last != nil {
		msg += fmt.Sprintf(" (last exit code %d", last.ExitCode)
		if last.Reason != "" {
			msg += ", " + last.Reason
		}
		msg += ")"
	}
	return msg
}

func terminated(what, name string, t *corev1.ContainerStateTerminated) string {
	msg := fmt.Sprintf("%s %s terminated with exit code %d", what, name, t.ExitCode)
	if t.Reason != "" {
		msg += ": " + t.Reason
	}
	if m := strings.TrimSpace(t.Message); m != "" {
		msg += ": " + m
	}
	return msg
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// RunsProxy reports whether a proxy serves the pod: it carries the
// injection's record, or the proxy container (as a classic sidecar or a
// native one among the init containers).
func RunsProxy(p *corev1.Pod) bool {
	if _, ok := p.Annotations[wellknown.AnnotationInjected]; ok {
		return true
	}
	for _, cs := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == wellknown.ProxyContainerName {
				return true
			}
		}
	}
	return false
}
