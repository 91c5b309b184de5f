package registry

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/wellknown"
)

// The Kubernetes registry runs against the real API server in
// internal/controller/push (kube_test.go); these are its pure parts.

func TestProtocolOf(t *testing.T) {
	for in, want := range map[string]meshapi.Protocol{
		"kubernetes.io/h2c": meshapi.ProtocolHTTP2,
		"grpc":              meshapi.ProtocolGRPC,
		"http":              meshapi.ProtocolHTTP1,
		"HTTP":              meshapi.ProtocolHTTP1,
		"tcp":               meshapi.ProtocolOpaque,
		"opaque":            meshapi.ProtocolOpaque,
		"kubernetes.io/wss": meshapi.ProtocolDetect,
		"":                  meshapi.ProtocolDetect,
	} {
		if got := protocolOf(&in); got != want {
			t.Errorf("appProtocol %q: %q, want %q", in, got, want)
		}
	}
	if got := protocolOf(nil); got != meshapi.ProtocolDetect {
		t.Errorf("no appProtocol: %q", got)
	}
}

func TestOpaquePorts(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{wellknown.AnnotationOpaquePorts: "3306, 8000-8002,db,nonsense,9-1"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "db", ContainerPort: 5432}}}}},
	}
	is := opaquePorts(pod)
	for port, want := range map[uint16]bool{3306: true, 8000: true, 8002: true, 8003: false, 5432: true, 9: false, 1: false, 80: false} {
		if is(port) != want {
			t.Errorf("port %d opaque: %v, want %v", port, !want, want)
		}
	}
	if opaquePorts(&corev1.Pod{}) != nil {
		t.Error("a pod without the annotation has opaque ports")
	}
}
