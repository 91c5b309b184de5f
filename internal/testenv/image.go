package testenv

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Image is a container image FROM scratch with one layer, built without a
// container builder or registry: WriteArchive writes it as an OCI image
// archive that containerd imports (Node.ImportImage). The real node has no
// registry, so every image its pods run is made this way.
type Image struct {
	// Name is the reference pods use, e.g. "local.test/meshproxy:dev". It
	// travels in the archive's index as io.containerd.image.name.
	Name       string
	Entrypoint []string
	Cmd        []string
	// Env defaults to a PATH of the usual directories.
	Env   []string
	files map[string]ImageFile // by clean path without the leading slash
}

// ImageFile is one entry of an image's layer.
type ImageFile struct {
	// Path is absolute within the image.
	Path string
	// Mode is the permission bits (0755 for directories and executables).
	Mode fs.FileMode
	// Exactly one of the following, or none for an empty file: Source, a
	// file on the host to copy; Data, the content; Symlink, the target of a
	// symbolic link; Dir, a directory.
	Source  string
	Data    []byte
	Symlink string
	Dir     bool
}

// NewImage returns an empty image.
func NewImage(name string, entrypoint ...string) *Image {
	return &Image{Name: name, Entrypoint: entrypoint, files: map[string]ImageFile{}}
}

// Add puts files into the image, replacing any at the same path. Parent
// directories are added as needed when the archive is written.
func (im *Image) Add(files ...ImageFile) {
	for _, f := range files {
		im.files[strings.TrimPrefix(path.Clean("/"+f.Path), "/")] = f
	}
}

// AddHostFile copies the host file src to dst in the image, keeping its
// permission bits; a symbolic link is followed.
func (im *Image) AddHostFile(dst, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("adding %s to image %s: %w", src, im.Name, err)
	}
	im.Add(ImageFile{Path: dst, Mode: fi.Mode().Perm(), Source: src})
	return nil
}

// imageConfig, imageManifest and imageIndex are the parts of the OCI image
// specification this writer needs.
type (
	descriptor struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Platform    *platform         `json:"platform,omitempty"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	platform struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	}
	imageConfig struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct {
			Entrypoint []string `json:"Entrypoint,omitempty"`
			Cmd        []string `json:"Cmd,omitempty"`
			Env        []string `json:"Env,omitempty"`
		} `json:"config"`
		RootFS struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	imageManifest struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}
	imageIndex struct {
		SchemaVersion int          `json:"schemaVersion"`
		Manifests     []descriptor `json:"manifests"`
	}
)

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar" // uncompressed: its digest is its diff ID
	defaultPath   = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// WriteArchive writes the image to the file out as an OCI image layout in
// a tar archive: an uncompressed layer, the config, the manifest and an
// index naming the image. The layer is written with fixed times and owners,
// so the same files give the same digests.
func (im *Image) WriteArchive(out string) error {
	layer, err := os.CreateTemp(filepath.Dir(out), ".layer-")
	if err != nil {
		return fmt.Errorf("writing image %s: %w", im.Name, err)
	}
	defer os.Remove(layer.Name())
	defer layer.Close()
	h := sha256.New()
	if err := im.writeLayer(io.MultiWriter(layer, h)); err != nil {
		return fmt.Errorf("writing image %s: %w", im.Name, err)
	}
	size, err := layer.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("writing image %s: %w", im.Name, err)
	}
	layerDigest := "sha256:" + hex.EncodeToString(h.Sum(nil))

	var cfg imageConfig
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config.Entrypoint, cfg.Config.Cmd, cfg.Config.Env = im.Entrypoint, im.Cmd, im.Env
	if cfg.Config.Env == nil {
		cfg.Config.Env = []string{defaultPath}
	}
	cfg.RootFS.Type, cfg.RootFS.DiffIDs = "layers", []string{layerDigest}
	cfgJSON, cfgDesc := jsonBlob(mediaConfig, cfg)
	man := imageManifest{
		SchemaVersion: 2,
		MediaType:     mediaManifest,
		Config:        cfgDesc,
		Layers:        []descriptor{{MediaType: mediaLayer, Digest: layerDigest, Size: size}},
	}
	manJSON, manDesc := jsonBlob(mediaManifest, man)
	manDesc.Platform = &platform{Architecture: "amd64", OS: "linux"}
	tag := im.Name[strings.LastIndex(im.Name, ":")+1:]
	manDesc.Annotations = map[string]string{
		"io.containerd.image.name":          im.Name,
		"org.opencontainers.image.ref.name": tag,
	}
	indexJSON, _ := json.Marshal(imageIndex{SchemaVersion: 2, Manifests: []descriptor{manDesc}})

	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("writing image %s: %w", im.Name, err)
	}
	tw := tar.NewWriter(f)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	err = add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	if err == nil {
		err = add("index.json", indexJSON)
	}
	if err == nil {
		err = tw.WriteHeader(&tar.Header{Name: "blobs/", Mode: 0o755, Typeflag: tar.TypeDir})
	}
	if err == nil {
		err = tw.WriteHeader(&tar.Header{Name: "blobs/sha256/", Mode: 0o755, Typeflag: tar.TypeDir})
	}
	if err == nil {
		err = add(blobPath(cfgDesc.Digest), cfgJSON)
	}
	if err == nil {
		err = add(blobPath(manDesc.Digest), manJSON)
	}
	if err == nil {
		err = tw.WriteHeader(&tar.Header{Name: blobPath(layerDigest), Mode: 0o644, Size: size, Typeflag: tar.TypeReg})
	}
	if err == nil {
		if _, err = layer.Seek(0, io.SeekStart); err == nil {
			_, err = io.Copy(tw, layer)
		}
	}
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return fmt.Errorf("writing image %s: %w", im.Name, err)
	}
	return nil
}

func blobPath(digest string) string { return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:") }

func jsonBlob(mediaType string, v any) ([]byte, descriptor) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings and numbers
	}
	sum := sha256.Sum256(b)
	return b, descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}
}

// writeLayer writes the layer's tar stream: every file in path order, each
// preceded by the directories above it that were not added explicitly.
func (im *Image) writeLayer(w io.Writer) error {
	entries := map[string]ImageFile{}
	for p, f := range im.files {
		entries[p] = f
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				if e, ok := im.files[d]; ok {
					entries[d] = e
				} else {
					entries[d] = ImageFile{Path: d, Mode: 0o755, Dir: true}
				}
			}
		}
	}
	names := make([]string, 0, len(entries))
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, p := range names {
		if err := writeEntry(tw, p, entries[p]); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, name string, f ImageFile) error {
	hdr := &tar.Header{Name: name, Mode: int64(f.Mode.Perm()), ModTime: time.Unix(0, 0)}
	if f.Mode&fs.ModeSticky != 0 {
		hdr.Mode |= 0o1000
	}
	switch {
	case f.Dir:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		return tw.WriteHeader(hdr)
	case f.Symlink != "":
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Symlink, 0o777
		return tw.WriteHeader(hdr)
	case f.Source != "":
		src, err := os.Open(f.Source)
		if err != nil {
			return err
		}
		defer src.Close()
		fi, err := src.Stat()
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if n, err := io.Copy(tw, src); err != nil || n != fi.Size() {
			return fmt.Errorf("copying %s: %d of %d bytes: %v", f.Source, n, fi.Size(), err)
		}
		return nil
	default:
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
}
