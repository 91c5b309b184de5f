package testenv

import (
	"context"
	"fmt"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// ServiceAccountToken creates the ServiceAccount namespace/name if it does
// not exist (the namespace must) and returns a token for it from the
// TokenRequest API, as a projected token volume would get. spec sets the
// audiences (none: the API server's own), the lifetime (the API server
// enforces at least 10 minutes) and, for a pod-bound token like a kubelet
// mounts, BoundObjectRef.
func (e *Env) ServiceAccountToken(ctx context.Context, namespace, name string, spec authenticationv1.TokenRequestSpec) (string, error) {
	sas := e.clientset.CoreV1().ServiceAccounts(namespace)
	_, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating service account %s/%s: %w", namespace, name, err)
	}
	tr, err := sas.CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for service account %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ServiceAccountConfig returns a client configuration that authenticates as
// the ServiceAccount namespace/name (created if missing), so that a test
// can check what RBAC lets that account do.
func (e *Env) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	token, err := e.ServiceAccountToken(ctx, namespace, name, authenticationv1.TokenRequestSpec{})
	if err != nil {
		return nil, err
	}
	c := rest.AnonymousClientConfig(e.Config)
	c.BearerToken = token
	return c, nil
}
