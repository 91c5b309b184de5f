package check

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/wellknown"
)

func webhook() Category {
	return Category{ID: CategoryWebhook, Checks: []Check{
		{
			Description: "the webhook's serving certificate is valid for its caBundle",
			Hint:        "webhook-cert",
			Run:         checkWebhookCert,
		},
		{
			Description: "the webhook's serving certificate is valid for at least 60 days",
			Hint:        "webhook-cert-expiry",
			Severity:    Warning,
			Run: func(_ context.Context, s *State) error {
				if s.webhookCert == nil {
					return fmt.Errorf("no certificate to check: the previous check did not pass")
				}
				return expiresSoon(s.webhookCert, s.now())
			},
		},
	}}
}

// checkWebhookCert verifies what the API server verifies when it calls the
// webhook: the serving certificate in the webhook's Secret chains, now, to
// the caBundle of the webhook configuration, for server authentication, and
// names the Service as the API server dials it (<service>.<namespace>.svc);
// and the Secret's key is the certificate's.
func checkWebhookCert(ctx context.Context, s *State) error {
	mwc, err := s.webhookConfiguration(ctx)
	if err != nil {
		return err
	}
	where, chain, err := s.tlsSecret(ctx, wellknown.WebhookSecretName)
	if err != nil {
		return err
	}
	cert := chain[0]
	if err := pki.CheckAlgorithm(cert.PublicKey); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if err := pki.CheckValidity(cert, s.now()); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	host := wellknown.ControllerName + "." + s.cfg.Namespace + ".svc"
	if err := cert.VerifyHostname(host); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	for _, w := range mwc.Webhooks {
		bundle, err := pki.ParseCertificates(w.ClientConfig.CABundle)
		if err != nil {
			return fmt.Errorf("caBundle of webhook %s in MutatingWebhookConfiguration %s: %w", w.Name, mwc.Name, err)
		}
		if err := pki.VerifyChain(cert, bundle, chain[1:], s.now(), x509.ExtKeyUsageServerAuth); err != nil {
			return fmt.Errorf("%s against the caBundle of webhook %s: %w", where, w.Name, err)
		}
	}
	s.webhookCert = cert
	return nil
}
