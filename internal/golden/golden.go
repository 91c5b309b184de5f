// Package golden compares a test's output with a file under testdata/, the
// way every golden-file test of this repository does, and rewrites the files
// when the test binary runs with -update:
//
//	go test ./internal/inject -update
//
// Only tests import it.
package golden

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files instead of comparing with them")

// Update reports whether the test binary runs with -update, for tests that
// regenerate more than a file (a directory of them, say).
func Update() bool { return *update }

// Check compares got with the file at path; with -update it writes got to
// path instead. A nil got means the file must not exist (and -update removes
// it).
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if got == nil {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			return
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if got == nil {
		if err == nil {
			t.Errorf("%s exists, but the test produces no output for it (run with -update to remove it)", path)
		}
		return
	}
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (run with -update and review the diff):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
