package install

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/meshctl/mesh/internal/podstatus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
)

// WorkloadStatus is the readiness of one control-plane Deployment and, when it
// is not ready, of each of its pods that is not.
type WorkloadStatus struct {
	Ref     Ref
	Desired int32
	Ready   int32
	// Updated is false while the Deployment rolls out a new template.
	Updated bool
	// Pods lists the pods that are not ready, each with the reason.
	Pods []PodStatus
}

// IsReady reports whether every replica is ready and runs the current
// template.
func (s WorkloadStatus) IsReady() bool { return s.Updated && s.Ready >= s.Desired }

// PodStatus says why one pod is not ready.
type PodStatus struct {
	Name   string
	Reason string
}

// TimeoutError is returned when the control plane did not become ready in
// time; Status is the last observed state, with the reason of each pod that
// is not ready.
type TimeoutError struct {
	Waited time.Duration
	Status []WorkloadStatus
	// Deleting lists what uninstall was still waiting to see gone.
	Deleting []string
}

func (e *TimeoutError) Error() string {
	var b strings.Builder
	if len(e.Deleting) > 0 {
		fmt.Fprintf(&b, "%d objects were not gone after %s: %s", len(e.Deleting), e.Waited, strings.Join(e.Deleting, ", "))
		return b.String()
	}
	fmt.Fprintf(&b, "the control plane was not ready after %s", e.Waited)
	for _, s := range e.Status {
		if s.IsReady() {
			continue
		}
		fmt.Fprintf(&b, "\n  %s: %d/%d ready", s.Ref, s.Ready, s.Desired)
		for _, p := range s.Pods {
			fmt.Fprintf(&b, "\n    pod %s: %s", p.Name, p.Reason)
		}
		if len(s.Pods) == 0 && s.Ready < s.Desired {
			b.WriteString("\n    no pods were created: check the Deployment's events (kubectl describe)")
		}
	}
	return b.String()
}

// IsTimeout reports whether err is a readiness timeout.
func IsTimeout(err error) bool {
	var t *TimeoutError
	return errors.As(err, &t)
}

const readinessPollInterval = time.Second

// WaitReady polls the Deployments in refs until all are ready or timeout
// passes, reporting each change of state to observe.
func (c *Clients) WaitReady(ctx context.Context, refs []Ref, timeout time.Duration, observe Observer) error {
	observe = observe.orDiscard()
	var deployments []Ref
	for _, r := range refs {
		if r.Kind == "Deployment" {
			deployments = append(deployments, r)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last []WorkloadStatus
	var lastReport string
	err := wait.PollUntilContextCancel(ctx, readinessPollInterval, true, func(ctx context.Context) (bool, error) {
		status, err := c.workloadStatus(ctx, deployments)
		if err != nil {
			// A transient API error should not end the wait; the last
			// error shows in the timeout if it persists.
			observe(Event{Type: EventWarning, Message: err.Error()})
			return false, nil
		}
		last = status
		ready := true
		for _, s := range status {
			ready = ready && s.IsReady()
		}
		if ready {
			observe(Event{Type: EventReady, Status: status})
			return true, nil
		}
		if report := fmt.Sprint(status); report != lastReport {
			lastReport = report
			observe(Event{Type: EventWaiting, Status: status})
		}
		return false, nil
	})
	if err != nil {
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.Canceled) {
			return &TimeoutError{Waited: timeout, Status: last}
		}
		return err
	}
	return nil
}

func (c *Clients) workloadStatus(ctx context.Context, deployments []Ref) ([]WorkloadStatus, error) {
	var out []WorkloadStatus
	for _, r := range deployments {
		d, err := c.Kube.AppsV1().Deployments(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", r, err)
		}
		s := deploymentStatus(r, d)
		if !s.IsReady() {
			sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil {
				return nil, fmt.Errorf("reading the selector of %s: %w", r, err)
			}
			pods, err := c.Kube.CoreV1().Pods(r.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
			if err != nil {
				return nil, fmt.Errorf("listing the pods of %s: %w", r, err)
			}
			s.Pods = podProblems(pods.Items, sel)
		}
		out = append(out, s)
	}
	return out, nil
}

func deploymentStatus(r Ref, d *appsv1.Deployment) WorkloadStatus {
	desired := int32(1)
	if d.Spec.Replicas != nil {
		desired = *d.Spec.Replicas
	}
	st := d.Status
	return WorkloadStatus{
		Ref:     r,
		Desired: desired,
		Ready:   st.ReadyReplicas,
		Updated: st.ObservedGeneration >= d.Generation && st.UpdatedReplicas >= desired && st.Replicas <= desired,
	}
}

// podProblems returns, for every pod that is not ready, why, in the words
// of package podstatus (which check uses too).
func podProblems(pods []corev1.Pod, sel labels.Selector) []PodStatus {
	var out []PodStatus
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		if !podstatus.Ready(p) {
			reason, _ := podstatus.Problem(p)
			out = append(out, PodStatus{Name: p.Name, Reason: reason})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
