package inject

import (
	"bytes"
	"os"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"
)

// FuzzInject feeds arbitrary streams to Inject and Uninject: neither may
// panic, and whenever Inject succeeds the round-trip properties hold.
//
//	go test -fuzz FuzzInject ./internal/inject
func FuzzInject(f *testing.F) {
	for _, fx := range fixtures(f) {
		b, err := os.ReadFile(fx.input)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, in []byte, native bool) {
		s := testSettings()
		s.NativeSidecar = native
		out, _, err := Inject(in, s)
		if err != nil && out != nil {
			t.Fatalf("Inject returned output along with the error %v", err)
		}
		// Uninject of an arbitrary stream may fail; it must not panic.
		Uninject(in)
		checkProperties(t, in, s)
	})
}

// FuzzSortedRendering injects arbitrary one-document streams, renders the
// result as kubectl and `-o json` do (through JSON, keys sorted), and holds
// injection to its promises on that rendering: re-injection changes
// nothing, uninjection succeeds and means what uninjecting the original
// means.
//
//	go test -fuzz FuzzSortedRendering ./internal/inject
func FuzzSortedRendering(f *testing.F) {
	for _, fx := range fixtures(f) {
		b, err := os.ReadFile(fx.input)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, in []byte, native bool) {
		if docs, err := splitDocuments(in); err != nil || len(docs) != 1 {
			return
		}
		s := testSettings()
		s.NativeSidecar = native
		out, _, err := Inject(in, s)
		if err != nil {
			return
		}
		j, err := sigsyaml.YAMLToJSON(out)
		if err != nil || !bytes.HasPrefix(j, []byte("{")) {
			return
		}
		y, err := sigsyaml.JSONToYAML(j)
		if err != nil {
			return
		}
		for _, r := range [][]byte{y, j} {
			again, reports, err := Inject(r, s)
			if err != nil {
				t.Fatalf("re-injecting the rendering: %v\n%s", err, r)
			}
			for _, rep := range reports {
				if rep.Outcome == Injected && rep.PreviousVersion != "" {
					t.Fatalf("re-injecting the rendering: %s\n%s\n%s", rep, r, again)
				}
			}
			if _, _, err := Uninject(r); err != nil {
				t.Fatalf("uninjecting the rendering: %v\n%s", err, r)
			}
		}
	})
}
