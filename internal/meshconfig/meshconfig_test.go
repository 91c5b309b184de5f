package meshconfig

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default("example/meshproxy:v1").Validate(); err != nil {
		t.Fatalf("default spec is invalid: %v", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Spec)
		field  string
	}{
		{func(s *Spec) { s.TrustDomain = "" }, "spec.trustDomain"},
		{func(s *Spec) { s.Identity.CertificateLifetime = metav1.Duration{Duration: 59 * time.Second} }, "spec.identity.certificateLifetime"},
		{func(s *Spec) { s.Proxy.Image = "" }, "spec.proxy.image"},
		{func(s *Spec) { s.Proxy.UID = 0 }, "spec.proxy.uid"},
		{func(s *Spec) { s.Proxy.AdminPort = 70000 }, "spec.proxy.adminPort"},
		{func(s *Spec) { s.Proxy.LogLevel = "loud" }, "spec.proxy.logLevel"},
		{func(s *Spec) { s.MTLS.Mode = "STRICT" }, "spec.mtls.mode"},
	} {
		s := Default("example/meshproxy:v1")
		tc.mutate(&s)
		err := s.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.field+":") {
			t.Errorf("want an error naming %s, got %v", tc.field, err)
		}
	}
}
