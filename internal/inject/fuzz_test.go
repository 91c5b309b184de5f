package inject

import (
	"os"
	"testing"
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
		if _, _, err := Uninject(in); err != nil {
			// Uninject of an arbitrary stream may fail; it must not panic.
			_ = err
		}
		checkProperties(t, in, s)
	})
}
