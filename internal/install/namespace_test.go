package install

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestCheckMeshNamespace(t *testing.T) {
	for ns, ok := range map[string]bool{
		"meshctl-system": true, "mesh": true,
		"default": false, "kube-system": false, "kube-public": false, "kube-node-lease": false, "kube-anything": false,
		"My_NS": false, "": false, "-mesh": false, "a.b": false,
	} {
		err := CheckMeshNamespace(ns)
		var nsErr *NamespaceError
		if (err == nil) != ok || (err != nil && !errors.As(err, &nsErr)) {
			t.Errorf("CheckMeshNamespace(%q) = %v, want ok=%v as a NamespaceError", ns, err, ok)
		}
	}
}

// Uninstall deletes only a namespace install marked as created, and never
// one of Kubernetes' own, marked or not (an older meshctl installed there).
func TestKeepsNamespace(t *testing.T) {
	ns := func(name string, labels map[string]string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetName(name)
		u.SetLabels(labels)
		return u
	}
	created := map[string]string{LabelNamespaceCreated: "true"}
	for _, tc := range []struct {
		ns   *unstructured.Unstructured
		keep bool
	}{
		{ns("mesh", created), false},
		{ns("mesh", nil), true},
		{ns("kube-system", created), true},
		{ns("default", nil), true},
	} {
		if got := keepsNamespace(tc.ns); got != tc.keep {
			t.Errorf("keepsNamespace(%s %v) = %v, want %v", tc.ns.GetName(), tc.ns.GetLabels(), got, tc.keep)
		}
	}
}
