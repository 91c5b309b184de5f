package inject

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/wellknown"
)

// TestBootstrapConfigLoads checks that the configuration injection writes
// into the pod is one that `meshproxy run --config` accepts.
func TestBootstrapConfigLoads(t *testing.T) {
	s := testSettings()
	for _, ann := range []map[string]string{
		{},
		{wellknown.AnnotationOpaquePorts: "3306, 6379,8000-8002"},
	} {
		p, err := s.configure(ann)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), ConfigFile)
		if err := os.WriteFile(path, []byte(p.bootstrapConfig()), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := config.Load(path); err != nil {
			t.Errorf("annotations %v: meshproxy would refuse its configuration: %v\n%s", ann, err, p.bootstrapConfig())
		}
	}
}

func TestInvalidAnnotationsAreErrors(t *testing.T) {
	s := testSettings()
	for _, ann := range []map[string]string{
		{wellknown.AnnotationProxyLogLevel: "verbose"},
		{wellknown.AnnotationProxyMemoryLimit: "a lot"},
		{wellknown.AnnotationSkipInboundPorts: "80,,81"},
		{wellknown.AnnotationSkipOutboundCIDRs: "10.0.0.0/33"},
		{wellknown.AnnotationOpaquePorts: "1-65535"},
		{wellknown.AnnotationProxyImage: " "},
	} {
		if _, err := s.configure(ann); err == nil {
			t.Errorf("annotations %v were accepted", ann)
		}
	}
}

func TestWithTag(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/meshctl/meshproxy:v1":           "ghcr.io/meshctl/meshproxy:v2",
		"ghcr.io/meshctl/meshproxy":              "ghcr.io/meshctl/meshproxy:v2",
		"localhost:5000/meshproxy:v1":            "localhost:5000/meshproxy:v2",
		"localhost:5000/meshproxy":               "localhost:5000/meshproxy:v2",
		"ghcr.io/meshctl/meshproxy@sha256:abcd":  "ghcr.io/meshctl/meshproxy:v2",
		"ghcr.io/meshctl/meshproxy:v1@sha256:ab": "ghcr.io/meshctl/meshproxy:v2",
	} {
		if got := withTag(in, "v2"); got != want {
			t.Errorf("withTag(%q) = %q, want %q", in, got, want)
		}
	}
}
