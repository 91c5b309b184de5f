package testenv_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/testenv"
)

// The archive must be an OCI image layout whose every blob matches its
// digest, whose index names the image for containerd, and whose layer holds
// the files with their parent directories; containerd refuses anything
// else (the real-node tests import such archives).
func TestImageArchive(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "prog")
	if err := os.WriteFile(host, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	im := testenv.NewImage("local.test/example:1", "/usr/local/bin/prog")
	if err := im.AddHostFile("/usr/local/bin/prog", host); err != nil {
		t.Fatal(err)
	}
	im.Add(testenv.ImageFile{Path: "/usr/local/bin/alias", Symlink: "prog"},
		testenv.ImageFile{Path: "/run/xtables.lock", Mode: 0o600})
	out := filepath.Join(dir, "image.tar")
	if err := im.WriteArchive(out); err != nil {
		t.Fatal(err)
	}

	blobs := map[string][]byte{}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		blobs[h.Name] = b
	}
	blob := func(digest string) []byte {
		t.Helper()
		b, ok := blobs["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
		if !ok {
			t.Fatalf("blob %s missing", digest)
		}
		if sum := sha256.Sum256(b); "sha256:"+hex.EncodeToString(sum[:]) != digest {
			t.Fatalf("blob %s has digest %x", digest, sum)
		}
		return b
	}
	if string(blobs["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", blobs["oci-layout"])
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v: %s", err, blobs["index.json"])
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != "local.test/example:1" {
		t.Errorf("io.containerd.image.name = %q", got)
	}
	var manifest struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	json.Unmarshal(blob(index.Manifests[0].Digest), &manifest)
	var config struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		}
	}
	json.Unmarshal(blob(manifest.Config.Digest), &config)
	if len(manifest.Layers) != 1 || len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != manifest.Layers[0].Digest {
		t.Fatalf("layers %v, diff IDs %v: want one uncompressed layer", manifest.Layers, config.RootFS.DiffIDs)
	}
	if strings.Join(config.Config.Entrypoint, " ") != "/usr/local/bin/prog" {
		t.Errorf("entrypoint %v", config.Config.Entrypoint)
	}

	var entries []string
	lr := tar.NewReader(strings.NewReader(string(blob(manifest.Layers[0].Digest))))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e := h.Name
		if h.Typeflag == tar.TypeSymlink {
			e += " -> " + h.Linkname
		}
		entries = append(entries, e)
	}
	want := []string{"run/", "run/xtables.lock", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/alias -> prog", "usr/local/bin/prog"}
	if strings.Join(entries, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer entries:\n%s\nwant:\n%s", strings.Join(entries, "\n"), strings.Join(want, "\n"))
	}
}
