package install

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/wellknown"
)

// existingIdentity reads the identity CA an earlier install left in
// namespace, or returns nil when there is none. A CA that is there but
// broken is an error: replacing it silently would cut every proxy off from
// the trust anchors it holds.
func (c *Clients) existingIdentity(ctx context.Context, namespace string, now time.Time) (*render.Identity, error) {
	cm, err := c.Kube.CoreV1().ConfigMaps(namespace).Get(ctx, wellknown.TrustAnchorsName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the trust anchors: %w", err)
	}
	sec, err := c.Kube.CoreV1().Secrets(namespace).Get(ctx, wellknown.IdentitySecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the identity issuer: %w", err)
	}
	id := &render.Identity{
		TrustAnchorsPEM: []byte(cm.Data["ca-bundle.crt"]),
		IssuerCertPEM:   sec.Data["tls.crt"],
		IssuerKeyPEM:    sec.Data["tls.key"],
	}
	if _, err := pki.LoadIdentity(id.TrustAnchorsPEM, id.IssuerCertPEM, id.IssuerKeyPEM, now); err != nil {
		return nil, fmt.Errorf("the identity CA in namespace %s is not usable (%w); replace it with --identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file", namespace, err)
	}
	return id, nil
}

// webhookRenewBefore is how close to expiry an existing webhook certificate
// may come before an upgrade replaces it.
const webhookRenewBefore = 30 * 24 * time.Hour

// existingWebhook reads the webhook's serving certificate and its CA from an
// earlier install, or returns nil when there is none or it no longer fits
// (wrong names, expiring): the webhook's credentials are the mesh's own and
// can be replaced at any time, unlike the identity CA.
func (c *Clients) existingWebhook(ctx context.Context, namespace string, now time.Time) (*render.Webhook, error) {
	sec, err := c.Kube.CoreV1().Secrets(namespace).Get(ctx, wellknown.WebhookSecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the webhook certificate: %w", err)
	}
	mwc, err := c.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, wellknown.WebhookName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && len(mwc.Webhooks) == 0) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the webhook configuration: %w", err)
	}
	wh := &render.Webhook{CABundlePEM: mwc.Webhooks[0].ClientConfig.CABundle, CertPEM: sec.Data["tls.crt"], KeyPEM: sec.Data["tls.key"]}
	b, err := pki.LoadWebhookTLS(wh.CABundlePEM, wh.CertPEM, wh.KeyPEM, wellknown.ControllerName, namespace, now)
	if err != nil || b.Cert.NotAfter.Sub(now) < webhookRenewBefore {
		return nil, nil
	}
	return wh, nil
}

// credentials returns what to render with: the identity the user gave, else
// the one already in the cluster, else (not on upgrade) a new one; the
// webhook certificate the user gave, else the one in the cluster while it
// fits, else a new one. An upgrade never makes a new identity CA: proxies
// trust the old one, and a new one would cut them off.
func (c *Clients) credentials(ctx context.Context, namespace, trustDomain string, given *render.Identity, givenWebhook *render.Webhook, upgrade bool, src pki.Source) (render.Identity, render.Webhook, error) {
	now := time.Now()
	if src.Clock != nil {
		now = src.Clock()
	}
	if givenWebhook != nil {
		if _, err := pki.LoadWebhookTLS(givenWebhook.CABundlePEM, givenWebhook.CertPEM, givenWebhook.KeyPEM, wellknown.ControllerName, namespace, now); err != nil {
			return render.Identity{}, render.Webhook{}, fmt.Errorf("checking the webhook certificate values: %w", err)
		}
	}
	id := given
	if id == nil {
		existing, err := c.existingIdentity(ctx, namespace, now)
		if err != nil {
			return render.Identity{}, render.Webhook{}, err
		}
		id = existing
	}
	if id == nil && upgrade {
		return render.Identity{}, render.Webhook{}, fmt.Errorf("the identity CA (ConfigMap %s and Secret %s) is missing from namespace %s: restore it from a backup, or uninstall and install again", wellknown.TrustAnchorsName, wellknown.IdentitySecretName, namespace)
	}
	if id == nil {
		gen, err := GenerateIdentity(trustDomain, src)
		if err != nil {
			return render.Identity{}, render.Webhook{}, err
		}
		id = &gen
	}
	wh := givenWebhook
	if wh == nil {
		existing, err := c.existingWebhook(ctx, namespace, now)
		if err != nil {
			return render.Identity{}, render.Webhook{}, err
		}
		wh = existing
	}
	if wh == nil {
		gen, err := GenerateWebhook(namespace, src)
		if err != nil {
			return render.Identity{}, render.Webhook{}, err
		}
		wh = &gen
	}
	return *id, *wh, nil
}

// GenerateIdentity makes a new identity CA for trustDomain.
func GenerateIdentity(trustDomain string, src pki.Source) (render.Identity, error) {
	b, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: trustDomain, Source: src})
	if err != nil {
		return render.Identity{}, err
	}
	return render.Identity{TrustAnchorsPEM: b.TrustAnchorsPEM, IssuerCertPEM: b.IssuerCertPEM, IssuerKeyPEM: b.IssuerKeyPEM}, nil
}

// GenerateWebhook makes a new serving certificate for the controller's
// webhook Service in namespace.
func GenerateWebhook(namespace string, src pki.Source) (render.Webhook, error) {
	b, err := pki.GenerateWebhookTLS(pki.WebhookOptions{ServiceName: wellknown.ControllerName, Namespace: namespace, Source: src})
	if err != nil {
		return render.Webhook{}, err
	}
	return render.Webhook{CABundlePEM: b.CABundlePEM, CertPEM: b.CertPEM, KeyPEM: b.KeyPEM}, nil
}

// LoadIdentityFiles checks user-given identity credentials before anything
// is rendered or applied.
func LoadIdentityFiles(anchorsPEM, issuerCertPEM, issuerKeyPEM []byte) (render.Identity, error) {
	if _, err := pki.LoadIdentity(anchorsPEM, issuerCertPEM, issuerKeyPEM, time.Now()); err != nil {
		return render.Identity{}, err
	}
	return render.Identity{TrustAnchorsPEM: anchorsPEM, IssuerCertPEM: issuerCertPEM, IssuerKeyPEM: issuerKeyPEM}, nil
}
