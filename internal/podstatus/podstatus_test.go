package podstatus

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/wellknown"
)

func TestProblem(t *testing.T) {
	bound := corev1.PodSpec{NodeName: "node-1"}
	for _, tc := range []struct {
		name      string
		pod       corev1.Pod
		want      string
		permanent bool
	}{
		{
			name: "unschedulable",
			pod: corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{
				Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				Message: "0/3 nodes are available: 3 Insufficient cpu.",
			}}}},
			want:      "cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
			permanent: true,
		},
		{
			name: "not scheduled yet",
			pod:  corev1.Pod{},
			want: "not scheduled yet",
		},
		{
			name: "init container crashing",
			pod: corev1.Pod{Spec: bound, Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{
				Name: "init", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 5m0s"}},
			}}}},
			want:      "init container init is waiting: CrashLoopBackOff: back-off 5m0s",
			permanent: true,
		},
		{
			name: "container creating",
			pod: corev1.Pod{Spec: bound, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
				Name: "controller", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
			}}}},
			want: "container controller is waiting: ContainerCreating",
		},
		{
			name: "terminated",
			pod: corev1.Pod{Spec: bound, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
				Name: "controller", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}},
			}}}},
			want: "container controller terminated with exit code 137: OOMKilled",
		},
		{
			name: "crash loop with its last exit",
			pod: corev1.Pod{Spec: bound, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
				Name:                 "controller",
				State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s"}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error"}},
			}}}},
			want:      "container controller is waiting: CrashLoopBackOff: back-off 40s (last exit code 2, Error)",
			permanent: true,
		},
		{
			name: "no container status yet, Ready condition says why",
			pod: corev1.Pod{Spec: bound, Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
				Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", Message: "containers with unready status: [controller]",
			}}}},
			want: "not ready: containers with unready status: [controller]",
		},
		{
			name: "nothing known",
			pod:  corev1.Pod{Spec: bound, Status: corev1.PodStatus{Phase: corev1.PodPending}},
			want: "pending and not ready",
		},
		{
			name: "probe failing",
			pod: corev1.Pod{Spec: bound, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
				Name: "controller", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
			}}}},
			want: "container controller is running but not ready (its readiness probe fails)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.pod.ObjectMeta = metav1.ObjectMeta{Name: "p"}
			got, permanent := Problem(&tc.pod)
			if got != tc.want || permanent != tc.permanent {
				t.Errorf("got %q (permanent %v), want %q (permanent %v)", got, permanent, tc.want, tc.permanent)
			}
		})
	}
}

func TestRunsProxy(t *testing.T) {
	if RunsProxy(&corev1.Pod{}) {
		t.Error("a bare pod is meshed")
	}
	if !RunsProxy(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{wellknown.AnnotationInjected: "{}"}}}) {
		t.Error("an injected pod is not meshed")
	}
	native := &corev1.Pod{Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: wellknown.ProxyContainerName}}}}
	if !RunsProxy(native) {
		t.Error("a pod with the proxy as a native sidecar is not meshed")
	}
}
