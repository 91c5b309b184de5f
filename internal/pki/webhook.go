package pki

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// WebhookOptions configure GenerateWebhookTLS.
type WebhookOptions struct {
	// ServiceName and Namespace are the webhook's Service; the certificate
	// names <service>.<namespace>.svc and <service>.<namespace>.svc.cluster.local.
	ServiceName string
	Namespace   string
	// Lifetime of the CA and the serving certificate; DefaultWebhookLifetime
	// when zero.
	Lifetime time.Duration
	Source
}

// WebhookBundle is the webhook's serving certificate and the CA that signed
// it, which the API server trusts through the webhook configuration's
// caBundle. The CA's key is not kept: a new certificate comes with a new CA.
type WebhookBundle struct {
	// CABundlePEM, CertPEM and KeyPEM are what the chart takes
	// (webhook.caBundlePEM, webhook.certPEM, webhook.keyPEM).
	CABundlePEM []byte
	CertPEM     []byte
	KeyPEM      []byte

	CA   []*x509.Certificate
	Cert *x509.Certificate
	Key  crypto.Signer
}

// WebhookDNSNames are the names the API server may use to reach the service.
func WebhookDNSNames(serviceName, namespace string) []string {
	return []string{
		serviceName + "." + namespace + ".svc",
		serviceName + "." + namespace + ".svc.cluster.local",
	}
}

// GenerateWebhookTLS makes a self-signed CA and a serving certificate for
// the webhook's Service signed by it.
func GenerateWebhookTLS(opts WebhookOptions) (*WebhookBundle, error) {
	if opts.ServiceName == "" || opts.Namespace == "" {
		return nil, errors.New("generating the webhook certificate: the service name and namespace must not be empty")
	}
	lifetime := opts.Lifetime
	if lifetime == 0 {
		lifetime = DefaultWebhookLifetime
	}
	names := WebhookDNSNames(opts.ServiceName, opts.Namespace)

	caKey, err := opts.newKey()
	if err != nil {
		return nil, fmt.Errorf("generating the webhook CA: %w", err)
	}
	caTmpl, err := opts.caTemplate("webhook-ca."+opts.Namespace+".meshctl.dev", lifetime, 0)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook CA: %w", err)
	}
	ca, caPEM, err := opts.sign(caTmpl, nil, caKey.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook CA: %w", err)
	}

	key, err := opts.newKey()
	if err != nil {
		return nil, fmt.Errorf("generating the webhook certificate: %w", err)
	}
	serial, err := opts.serialNumber()
	if err != nil {
		return nil, fmt.Errorf("generating the webhook certificate: %w", err)
	}
	now := opts.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	cert, certPEM, err := opts.sign(tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook certificate: %w", err)
	}
	keyPEM, err := EncodePrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook certificate: %w", err)
	}
	return &WebhookBundle{
		CABundlePEM: caPEM,
		CertPEM:     certPEM,
		KeyPEM:      keyPEM,
		CA:          []*x509.Certificate{ca},
		Cert:        cert,
		Key:         key,
	}, nil
}

// LoadWebhookTLS parses the webhook's credentials and verifies that the API
// server will accept them at now: the certificate chains to the CA bundle for
// server authentication, names the Service, and matches the key.
func LoadWebhookTLS(caBundlePEM, certPEM, keyPEM []byte, serviceName, namespace string, now time.Time) (*WebhookBundle, error) {
	ca, err := ParseCertificates(caBundlePEM)
	if err != nil {
		return nil, fmt.Errorf("loading the webhook CA bundle: %w", err)
	}
	chain, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the webhook certificate: %w", err)
	}
	cert := chain[0]
	if err := CheckAlgorithm(cert.PublicKey); err != nil {
		return nil, fmt.Errorf("loading the webhook certificate: %w", err)
	}
	if err := CheckValidity(cert, now); err != nil {
		return nil, fmt.Errorf("loading the webhook certificate: %w", err)
	}
	if err := VerifyChain(cert, ca, chain[1:], now, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, fmt.Errorf("loading the webhook certificate: %w", err)
	}
	for _, name := range WebhookDNSNames(serviceName, namespace) {
		if err := cert.VerifyHostname(name); err != nil {
			return nil, fmt.Errorf("loading the webhook certificate: %w", err)
		}
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading the webhook key: %w", err)
	}
	if err := CheckKeyPair(cert, key); err != nil {
		return nil, fmt.Errorf("loading the webhook key: %w", err)
	}
	return &WebhookBundle{CABundlePEM: caBundlePEM, CertPEM: certPEM, KeyPEM: keyPEM, CA: ca, Cert: cert, Key: key}, nil
}
