package servingcert

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/controller/testcert"
)

func TestReloadsOnSecretUpdate(t *testing.T) {
	dir := t.TempDir()
	r := New(dir)
	if err := r.Loaded(); err == nil {
		t.Fatal("empty directory: loaded")
	}
	if _, err := r.GetCertificate(nil); err == nil {
		t.Fatal("empty directory: GetCertificate gave a certificate")
	}

	ca := testcert.NewCA(t)
	first := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	certPEM, keyPEM := ca.Serving(t, 2, first)
	testcert.WriteSecretDir(t, dir, certPEM, keyPEM)
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatalf("after the files appeared: %v", err)
	}
	if err := r.Loaded(); err != nil {
		t.Fatalf("after the files appeared: %v", err)
	}
	if c.Leaf.SerialNumber.Int64() != 2 || !r.NotAfter().Equal(first) {
		t.Fatalf("serial %v, expiry %v; want 2, %v", c.Leaf.SerialNumber, r.NotAfter(), first)
	}

	second := first.Add(time.Hour)
	certPEM, keyPEM = ca.Serving(t, 3, second)
	testcert.WriteSecretDir(t, dir, certPEM, keyPEM)
	if c, err = r.GetCertificate(nil); err != nil || c.Leaf.SerialNumber.Int64() != 3 {
		t.Fatalf("after the symlink swap: serial %v, error %v; want 3", c.Leaf.SerialNumber, err)
	}

	// A broken update (a key that does not match) keeps the good pair in
	// service, reports why, and is retried until it is fixed.
	otherCert, _ := ca.Serving(t, 4, second)
	testcert.WriteSecretDir(t, dir, otherCert, keyPEM)
	if c, err = r.GetCertificate(nil); err != nil || c.Leaf.SerialNumber.Int64() != 3 {
		t.Fatalf("after a broken update: serial %v, error %v; want 3 still served", c.Leaf.SerialNumber, err)
	}
	if err := r.Check(); err == nil {
		t.Error("after a broken update: Check reports no error")
	}
	if err := r.Loaded(); err != nil {
		t.Errorf("after a broken update: %v; the previous pair is still in service", err)
	}
	certPEM, keyPEM = ca.Serving(t, 5, second)
	testcert.WriteSecretDir(t, dir, certPEM, keyPEM)
	if c, err = r.GetCertificate(nil); err != nil || c.Leaf.SerialNumber.Int64() != 5 {
		t.Fatalf("after the fix: serial %v, error %v; want 5", c.Leaf.SerialNumber, err)
	}
}

func TestPlainFiles(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	certPEM, keyPEM := ca.Serving(t, 7, time.Now().Add(time.Hour))
	for name, b := range map[string][]byte{CertFile: certPEM, KeyFile: keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(dir).GetCertificate(nil)
	if err != nil || c.Leaf.SerialNumber.Int64() != 7 {
		t.Fatalf("serial %v, error %v; want 7", c, err)
	}
}
