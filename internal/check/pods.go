package check

import (
	"context"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/podstatus"
	"github.com/meshctl/mesh/internal/wellknown"
)

// controllerComponent is the value of the component label on the
// controller's objects and pods.
const controllerComponent = "controller"

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
		if podstatus.Ready(p) {
			continue
		}
		problem, permanent := podstatus.Problem(p)
		problems = append(problems, "pod "+p.Name+": "+problem)
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
