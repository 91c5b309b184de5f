package mounted

import (
	"os"
	"path/filepath"
	"testing"
)

// A file swapped the way the kubelet updates a Secret volume (new data
// directory, then a symlink rename) is a change until accepted; a change
// that was not accepted stays a change.
func TestChangedUntilAccepted(t *testing.T) {
	dir := t.TempDir()
	write := func(data, content string) {
		d := filepath.Join(dir, data)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "tls.crt"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		os.Remove(tmp)
		if err := os.Symlink(data, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write("v1", "one")
	if err := os.Symlink("..data/tls.crt", filepath.Join(dir, "tls.crt")); err != nil {
		t.Fatal(err)
	}
	f := New(filepath.Join(dir, "tls.crt"))
	check := func(want bool) {
		t.Helper()
		got, err := f.Changed()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("Changed() = %v, want %v", got, want)
		}
	}
	check(true)
	check(true) // not accepted yet
	f.Accept()
	check(false)
	write("v2", "two")
	check(true)
	f.Accept()
	check(false)

	os.Remove(filepath.Join(dir, "..data"))
	if _, err := f.Changed(); err == nil {
		t.Error("a missing file is no error")
	}
}
