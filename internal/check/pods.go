package check

import (
	"context"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/wellknown"
)

// controllerComponent is the value of the component label on the
// controller's objects and pods.
const controllerComponent = "controller"

// stuckReasons are the waiting reasons that do not clear by waiting a few
// minutes; a pod that shows one fails the check at once instead of hanging
// until --wait passes.
var stuckReasons = map[string]bool{
	"ErrImagePull":               true,
	"ImagePullBackOff":           true,
	"InvalidImageName":           true,
	"CrashLoopBackOff":           true,
	"CreateContainerConfigError": true,
	"CreateContainerError":       true,
}

func pods() Category {
	return Category{ID: CategoryPods, Checks: []Check{{
		Description: "the controller pods are ready",
		Hint:        "cp-pods-ready",
		Retry:       true,
		Run:         checkControllerPods,
	}}}
}

// checkControllerPods lists the controller's pods afresh on every attempt
// and says, for each pod that is not ready, why.
func checkControllerPods(ctx context.Context, s *State) error {
	selector := s.ownedSelector() + "," + wellknown.LabelComponent + "=" + controllerComponent
	list, err := s.kube.CoreV1().Pods(s.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("listing the controller pods: %w", err)
	}
	var problems []string
	live, stuck := 0, true
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		live++
		if podReady(p) {
			continue
		}
		problem, permanent := podProblem(p)
		problems = append(problems, problem)
		stuck = stuck && permanent
	}
	if live == 0 {
		return s.noControllerPods(ctx)
	}
	if want := s.desiredControllers(ctx); live < want {
		problems = append(problems, fmt.Sprintf("%d of %d controller pods exist", live, want))
		stuck = false
	}
	if len(problems) == 0 {
		return nil
	}
	err = errors.New(strings.Join(problems, "\n"))
	if stuck {
		return Permanent(err)
	}
	return err
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podProblem says why p is not ready, and whether waiting will not help.
func podProblem(p *corev1.Pod) (string, bool) {
	prefix := "pod " + p.Name + ": "
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return prefix + "cannot be scheduled: " + c.Message, c.Reason == corev1.PodReasonUnschedulable
		}
	}
	if p.Spec.NodeName == "" {
		return prefix + "not scheduled yet", false
	}
	for _, cs := range p.Status.InitContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "PodInitializing" {
			return prefix + containerWaiting("init container", cs.Name, w), stuckReasons[w.Reason]
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return prefix + containerTerminated("init container", cs.Name, t), false
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		switch {
		case cs.State.Waiting != nil:
			return prefix + containerWaiting("container", cs.Name, cs.State.Waiting), stuckReasons[cs.State.Waiting.Reason]
		case cs.State.Terminated != nil:
			return prefix + containerTerminated("container", cs.Name, cs.State.Terminated), false
		case !cs.Ready:
			return prefix + "container " + cs.Name + " is running but not ready (its readiness probe fails)", false
		}
	}
	return prefix + strings.ToLower(string(p.Status.Phase)) + " and not ready", false
}

func containerWaiting(what, name string, w *corev1.ContainerStateWaiting) string {
	msg := what + " " + name + " is waiting: " + w.Reason
	if w.Message != "" {
		msg += ": " + w.Message
	}
	return msg
}

func containerTerminated(what, name string, t *corev1.ContainerStateTerminated) string {
	msg := fmt.Sprintf("%s %s terminated with exit code %d", what, name, t.ExitCode)
	if t.Reason != "" {
		msg += ": " + t.Reason
	}
	return msg
}

// desiredControllers is the controller Deployment's replicas as listed by
// the existence checks; 1 when unknown.
func (s *State) desiredControllers(ctx context.Context) int {
	u, err := s.object(ctx, deployments, wellknown.ControllerName)
	if err != nil {
		return 1
	}
	d, err := decode[appsv1.Deployment](u)
	if err != nil || d.Spec.Replicas == nil {
		return 1
	}
	return int(*d.Spec.Replicas)
}

// noControllerPods explains an absence of pods by the Deployment's state.
func (s *State) noControllerPods(ctx context.Context) error {
	d, err := s.kube.AppsV1().Deployments(s.cfg.Namespace).Get(ctx, wellknown.ControllerName, metav1.GetOptions{})
	if isNotFound(err) {
		return Permanent(fmt.Errorf("no controller pods: Deployment %s/%s is missing", s.cfg.Namespace, wellknown.ControllerName))
	}
	if err != nil {
		return fmt.Errorf("no controller pods; getting their Deployment: %w", err)
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas == 0 {
		return Permanent(fmt.Errorf("no controller pods: Deployment %s/%s is scaled to 0", d.Namespace, d.Name))
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
			return fmt.Errorf("no controller pods: %s: %s", c.Reason, c.Message)
		}
	}
	return fmt.Errorf("no controller pods yet")
}
