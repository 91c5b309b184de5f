// Package install puts the mesh's control plane on a cluster, upgrades it and
// takes it away: it applies what internal/install/render renders with
// server-side apply, waits for readiness, prunes and deletes by the mesh's
// ownership labels, and stores the user's values in the cluster so that an
// upgrade reproduces them.
package install

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshctl/mesh/internal/wellknown"
)

// ErrNotInstalled is returned when the mesh namespace holds no installation.
var ErrNotInstalled = errors.New("the mesh is not installed")

// Installation is what a completed install leaves in the cluster: the
// Secret of stored values, which install writes last.
type Installation struct {
	Namespace string
	// Version is the mesh version that installed or last upgraded the
	// control plane.
	Version string
	// Values are the user's non-default values, as given to install and
	// upgrade.
	Values map[string]any
	// Inventory lists the objects the last install or upgrade applied.
	Inventory []Ref
}

// Find returns the installation in namespace, or ErrNotInstalled.
func Find(ctx context.Context, kube kubernetes.Interface, namespace string) (*Installation, error) {
	sec, err := kube.CoreV1().Secrets(namespace).Get(ctx, wellknown.ValuesSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, ErrNotInstalled
	}
	if err != nil {
		return nil, fmt.Errorf("reading the installation in namespace %s: %w", namespace, err)
	}
	return installationFromSecret(sec)
}

func installationFromSecret(sec *corev1.Secret) (*Installation, error) {
	values, err := decodeStoredValues(sec.Data[storedValuesKey])
	if err != nil {
		return nil, fmt.Errorf("reading stored values from secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	inventory, err := decodeInventory(sec.Data[inventoryKey])
	if err != nil {
		return nil, fmt.Errorf("reading secret %s/%s: %w", sec.Namespace, sec.Name, err)
	}
	v := string(sec.Data[versionKey])
	if v == "" {
		v = sec.Labels[wellknown.LabelVersion]
	}
	return &Installation{Namespace: sec.Namespace, Version: v, Values: values, Inventory: inventory}, nil
}
