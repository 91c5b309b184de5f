package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/config"
	"github.com/meshctl/mesh/internal/wellknown"
)

// TestBootstrapConfigLoads checks that the configuration injection writes
// into the pod is one that `meshproxy run --config` accepts, and that its
// "controller" object is exactly a meshapi.Bootstrap.
func TestBootstrapConfigLoads(t *testing.T) {
	s := testSettings()
	for _, ann := range []map[string]string{
		{},
		{wellknown.AnnotationOpaquePorts: "3306, 6379,8000-8002"},
		{wellknown.AnnotationMTLSMode: "strict", wellknown.AnnotationPermissiveMTLSPorts: "9090-9091"},
		{wellknown.AnnotationMTLSMode: "permissive", wellknown.AnnotationStrictMTLSPorts: "8443"},
	} {
		p, err := s.configure(ann)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal([]byte(p.bootstrapConfig()), &doc); err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(doc["controller"]))
		dec.DisallowUnknownFields()
		var b meshapi.Bootstrap
		if err := dec.Decode(&b); err != nil {
			t.Fatalf("controller is not a meshapi.Bootstrap: %v", err)
		}
		want := meshapi.Bootstrap{
			Address:        "meshctl-controller.meshctl-system.svc:15112",
			ServerIdentity: "spiffe://cluster.local/ns/meshctl-system/sa/meshctl-controller",
			TrustAnchors:   testAnchors,
			TokenFile:      "/var/run/secrets/meshctl.dev/proxy/token",
		}
		if !reflect.DeepEqual(b, want) {
			t.Errorf("controller = %+v, want %+v", b, want)
		}
		// The rest, without the controller object checked above, must
		// load as it is.
		delete(doc, "controller")
		rest, _ := json.Marshal(doc)
		path := filepath.Join(t.TempDir(), ConfigFile)
		if err := os.WriteFile(path, rest, 0o644); err != nil {
			t.Fatal(err)
		}
		tbl, err := config.Load(path)
		if err != nil {
			t.Fatalf("annotations %v: meshproxy would refuse its configuration: %v\n%s", ann, err, p.bootstrapConfig())
		}
		in := tbl.Config.Inbound
		if got := string(in.MTLS); got != ann[wellknown.AnnotationMTLSMode] {
			t.Errorf("annotations %v: inbound.mtls %q", ann, got)
		}
		if got := fmt.Sprint(in.StrictMTLSPorts, in.PermissiveMTLSPorts); ann[wellknown.AnnotationMTLSMode] == "strict" && got != "[] [9090 9091]" ||
			ann[wellknown.AnnotationMTLSMode] == "permissive" && got != "[8443] []" {
			t.Errorf("annotations %v: strict and permissive ports %s", ann, got)
		}
	}
}

func TestInjectWithoutTrustAnchorsFails(t *testing.T) {
	in := []byte("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: a\n    image: a\n")
	for name, mutate := range map[string]func(*Settings){
		"no anchors":      func(s *Settings) { s.TrustAnchors = nil },
		"no trust domain": func(s *Settings) { s.TrustDomain = "" },
	} {
		s := testSettings()
		mutate(&s)
		if out, _, err := Inject(in, s); err == nil || out != nil {
			t.Errorf("%s: Inject succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// A stream without workloads needs no anchors.
	s := testSettings()
	s.TrustAnchors = nil
	if _, _, err := Inject([]byte("kind: Service\nmetadata: {name: a}\n"), s); err != nil {
		t.Errorf("a stream without workloads: %v", err)
	}
}

func TestParseTrustAnchors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "trust-anchors.pem"))
	if err != nil {
		t.Fatal(err)
	}
	two, err := ParseTrustAnchors(append(append([]byte("# comment\n"), b...), b...))
	if err != nil || len(two) != 2 || two[0] != string(b) {
		t.Errorf("two anchors: %d, %v", len(two), err)
	}
	for _, bad := range []string{"", "not pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if _, err := ParseTrustAnchors([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
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
		{wellknown.AnnotationMTLSMode: "STRICT"},
		{wellknown.AnnotationStrictMTLSPorts: "http"},
		{wellknown.AnnotationStrictMTLSPorts: "80-90", wellknown.AnnotationPermissiveMTLSPorts: "90"},
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
