package inject

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/golden"

	"github.com/meshctl/mesh/internal/meshconfig"
)

// testVersion is the mesh version of the fixtures, fixed so that golden
// files do not change with every release.
const testVersion = "v1.0.0"

func testSettings() Settings {
	s := NewSettings(meshconfig.Default("ghcr.io/meshctl/meshproxy:"+testVersion), "meshctl-system", testVersion)
	s.TrustAnchors = testAnchors
	return s
}

// testAnchors is a self-signed CA made for the fixtures, valid for a
// century so that golden files do not expire.
var testAnchors = func() []string {
	b, err := os.ReadFile(filepath.Join("testdata", "trust-anchors.pem"))
	if err != nil {
		panic(err)
	}
	a, err := ParseTrustAnchors(b)
	if err != nil {
		panic(err)
	}
	return a
}()

// fixtureSettings are the settings of one fixture: the defaults (the
// cluster's version unknown), with the native sidecar for fixtures named
// native-* and Kubernetes 1.28 for those named old-cluster-*.
func fixtureSettings(name string) Settings {
	s := testSettings()
	s.NativeSidecar = strings.HasPrefix(name, "native-")
	if strings.HasPrefix(name, "old-cluster-") {
		s.KubernetesVersion = "v1.28.5"
	}
	return s
}

type fixture struct {
	name   string // e.g. "deployment"
	input  string // path of x.input.yaml or x.input.json
	golden string // path of x.golden.yaml or x.golden.json
	report string // path of x.report
}

func fixtures(t testing.TB) []fixture {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "*.input.*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	var out []fixture
	for _, p := range paths {
		base := filepath.Base(p)
		i := strings.Index(base, ".input.")
		name, ext := base[:i], base[i+len(".input."):]
		out = append(out, fixture{
			name:   name,
			input:  p,
			golden: filepath.Join("testdata", name+".golden."+ext),
			report: filepath.Join("testdata", name+".report"),
		})
	}
	return out
}

// reportText is the content of a fixture's .report file: the report lines,
// or the error.
func reportText(reports []Report, err error) string {
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
		return b.String()
	}
	for _, r := range reports {
		b.WriteString(r.String() + "\n")
	}
	return b.String()
}

func TestInjectGolden(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			in, err := os.ReadFile(f.input)
			if err != nil {
				t.Fatal(err)
			}
			out, reports, err := Inject(in, fixtureSettings(f.name))
			if err != nil && out != nil {
				t.Errorf("Inject returned output with an error")
			}
			golden.Check(t, f.golden, out)
			golden.Check(t, f.report, []byte(reportText(reports, err)))
		})
	}
}

// TestProperties checks, on every fixture, the promises of the package:
// uninject(inject(x)) == uninject(x) (which is x when x carries no
// injection), and inject(inject(x)) == inject(x).
func TestProperties(t *testing.T) {
	for _, f := range fixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			in, err := os.ReadFile(f.input)
			if err != nil {
				t.Fatal(err)
			}
			checkProperties(t, in, fixtureSettings(f.name))
		})
	}
}

func checkProperties(t *testing.T, in []byte, s Settings) {
	t.Helper()
	out, _, err := Inject(in, s)
	if err != nil {
		return
	}
	plain, _, err := Uninject(in)
	if err != nil {
		t.Fatalf("Uninject(x) failed although Inject(x) succeeded: %v", err)
	}
	back, _, err := Uninject(out)
	if err != nil {
		t.Fatalf("Uninject(Inject(x)): %v", err)
	}
	if !bytes.Equal(back, plain) {
		t.Fatalf("Uninject(Inject(x)) != Uninject(x)\n--- x\n%q\n--- Uninject(Inject(x))\n%q\n--- Uninject(x)\n%q", in, back, plain)
	}
	again, _, err := Inject(out, s)
	if err != nil {
		t.Fatalf("Inject(Inject(x)): %v", err)
	}
	if !bytes.Equal(again, out) {
		t.Fatalf("Inject(Inject(x)) != Inject(x)\n--- x\n%q\n--- Inject(x)\n%q\n--- Inject(Inject(x))\n%q", in, out, again)
	}
}

func TestErrorLocatesTheDocument(t *testing.T) {
	in := []byte("apiVersion: v1\nkind: ConfigMap\n---\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: [\n")
	_, _, err := Inject(in, testSettings())
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v, want an *Error", err)
	}
	if e.Document != 2 {
		t.Errorf("document = %d, want 2 (%v)", e.Document, err)
	}
	if !strings.Contains(err.Error(), "line 8") {
		t.Errorf("error %q does not name the stream's line 8", err)
	}
}
