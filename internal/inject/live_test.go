package inject

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// Objects read back from an API server carry their injection sorted,
// defaulted and added to. These tests hold injection to the promises of
// docs/inject.md on such objects: `kubectl get -o yaml | meshctl inject -`
// reports unchanged and writes the input, uninject succeeds, and
// re-injection and `-o json` round-trip.

// liveRenderings are the API server's renderings of the golden files
// (testdata/live/<fixture>.yaml and .json), made by TestMakeLiveRenderings
// in internal/cli/cmd/inject, whose tests have the test API server.
func liveRenderings(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "live", "*"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

func TestLiveRenderings(t *testing.T) {
	r := liveRenderings(t)
	if len(r) == 0 {
		t.Fatal("no renderings in testdata/live: run go test ./internal/cli/cmd/inject -run TestMakeLiveRenderings -update")
	}
	for name, b := range r {
		t.Run(name, func(t *testing.T) {
			fixture := strings.TrimSuffix(name, filepath.Ext(name))
			checkLive(t, b, fixtureSettings(fixture))
		})
	}
}

// TestSortedRenderings renders every golden document as kubectl does
// (through JSON, keys sorted, long strings folded) without defaults: the
// layouts an API server's output takes, for fixtures that were never
// applied.
func TestSortedRenderings(t *testing.T) {
	for _, f := range fixtures(t) {
		b, err := os.ReadFile(f.golden)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		docs, err := splitDocuments(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			j, err := yaml.YAMLToJSON(d.b)
			if err != nil || string(j) == "null" {
				continue
			}
			y, err := yaml.JSONToYAML(j)
			if err != nil {
				t.Fatal(err)
			}
			t.Run(f.name, func(t *testing.T) {
				s := fixtureSettings(f.name)
				if f.name == "opt-out" {
					// The Namespace that opts out is another document.
					s.Namespaces = map[string]string{"legacy": "disabled"}
				}
				checkLive(t, y, s)
				checkLive(t, indentJSON(t, j), s)
			})
		}
	}
}

// checkLive checks what must hold of an injected object as read back.
func checkLive(t *testing.T, in []byte, s Settings) {
	t.Helper()
	out, reports, err := Inject(in, s)
	if err != nil {
		t.Fatalf("inject: %v\n%s", err, in)
	}
	// Workloads injected already must be unchanged; those that were
	// skipped for their YAML (anchors) may be injected once flattened.
	injected := false
	for _, r := range reports {
		if r.Outcome == Injected {
			injected = true
			if r.PreviousVersion != "" {
				t.Errorf("inject reports %s; want unchanged", r)
			}
		}
	}
	if !injected && !bytes.Equal(out, in) {
		t.Errorf("inject changed the input:\n%s", out)
	}
	plain, _, err := Uninject(in)
	if err != nil {
		t.Fatalf("uninject: %v", err)
	}
	if _, reps, err := Uninject(plain); err != nil {
		t.Errorf("uninject of uninject's output: %v", err)
	} else {
		for _, r := range reps {
			if r.Outcome == Uninjected {
				t.Errorf("uninject left an injection: %s", r)
			}
		}
	}
	again, _, err := Inject(plain, s)
	if err != nil {
		t.Fatalf("re-inject after uninject: %v", err)
	}
	if back, _, err := Uninject(again); err != nil || !bytes.Equal(back, plain) {
		t.Errorf("uninject(inject(uninject(x))) != uninject(x): %v\n%s", err, back)
	}
	checkProperties(t, in, s)

	// `meshctl inject -o json` re-encodes with sorted keys; uninject of
	// that must mean what uninject of the input means.
	j, err := yaml.YAMLToJSON(out)
	if err != nil {
		t.Fatal(err)
	}
	jplain, _, err := Uninject(indentJSON(t, j))
	if err != nil {
		t.Fatalf("uninject of the -o json output: %v", err)
	}
	if !sameObject(t, jplain, plain) {
		t.Errorf("uninject of the -o json output\n%s\nmeans other than uninject of the input\n%s", jplain, plain)
	}
}

func indentJSON(t *testing.T, j []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := json.Indent(&b, j, "", "    "); err != nil {
		t.Fatal(err)
	}
	return append(b.Bytes(), '\n')
}

func sameObject(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := yaml.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// TestPlainLayoutFallback: where the splicer cannot edit a layout in place
// (here a complex key "? k" holding the injection's status), the document
// is rewritten in the plainest layout and edited there, never refused, and
// the promises hold on the result.
func TestPlainLayoutFallback(t *testing.T) {
	in := []byte("--- # a comment\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n    a: b\n    ? meshctl.dev/injected\n    : '{\"version\":\"v0\",\"annotations\":[\"meshctl.dev/proxy-config\"]}'\n    meshctl.dev/proxy-config: x\nspec:\n  containers:\n  - name: a\n    image: a\n")
	plain, reports, err := Uninject(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || reports[0].Outcome != Uninjected || reports[0].Line != 2 {
		t.Errorf("reports %+v", reports)
	}
	want := "---\n# a comment\nkind: Pod\nmetadata:\n  name: a\n  annotations:\n    a: b\nspec:\n  containers:\n    - name: a\n      image: a\n"
	if string(plain) != want {
		t.Errorf("uninject gave\n%s\nwant\n%s", plain, want)
	}
	out, reports, err := Inject(in, testSettings())
	if err != nil || len(reports) != 1 || reports[0].Outcome != Injected || reports[0].PreviousVersion != "v0" {
		t.Fatalf("inject: %v %+v", err, reports)
	}
	checkProperties(t, in, testSettings())
	checkLive(t, out, testSettings())
}
