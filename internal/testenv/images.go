package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// The images the real node's pods run. Nothing is ever pulled: the node
// imports them (Node.ImportImage), and pods use imagePullPolicy Never or
// IfNotPresent.
const (
	// PauseImageName is the node's sandbox image (containerd's
	// sandbox_image), imported by StartNode.
	PauseImageName = "local.test/testenv-pause:1"
	// AppImageName is the test application (internal/testenv/testapp):
	// entrypoint `testapp`, default command `serve :8080`.
	AppImageName = "local.test/testapp:1"
	// MeshImageRepository and MeshImageTag name the mesh's image as
	// BuildMeshImage makes it; the chart's image.repository and image.tag.
	MeshImageRepository = "local.test/meshproxy"
	MeshImageTag        = "dev"
)

// ImageArchive is an image written to disk for Node.ImportImage.
type ImageArchive struct {
	Name string // the reference pods use
	Path string // the OCI archive
}

const (
	modulePath = "github.com/meshctl/mesh"
	testappPkg = modulePath + "/internal/testenv/testapp"
)

// BuildAppImage builds the test application (a static Go HTTP server, see
// internal/testenv/testapp) into dir and writes its image there.
func BuildAppImage(ctx context.Context, dir string) (ImageArchive, error) {
	bin, err := buildStatic(ctx, dir, testappPkg)
	if err != nil {
		return ImageArchive{}, err
	}
	im := NewImage(AppImageName, "/usr/local/bin/testapp")
	im.Cmd = []string{"serve", ":8080"}
	im.Add(ImageFile{Path: "/tmp", Mode: 0o777 | os.ModeSticky, Dir: true})
	if err := im.AddHostFile("/usr/local/bin/testapp", bin[0]); err != nil {
		return ImageArchive{}, err
	}
	return writeImage(im, dir)
}

// buildPauseImage writes the sandbox image: testapp as /pause, which then
// only waits and reaps.
func buildPauseImage(ctx context.Context, dir string) (ImageArchive, error) {
	bin, err := buildStatic(ctx, dir, testappPkg)
	if err != nil {
		return ImageArchive{}, err
	}
	im := NewImage(PauseImageName, "/pause")
	if err := im.AddHostFile("/pause", bin[0]); err != nil {
		return ImageArchive{}, err
	}
	return writeImage(im, dir)
}

// BuildMeshImage builds the mesh's image as the Dockerfile lays it out, into
// dir: static meshproxy (and meshcontroller, when the module has
// cmd/meshcontroller) in /usr/local/bin, entrypoint meshproxy, plus the
// host's iptables (see addIPTables) for `meshproxy init`. moduleDir is the
// root of this repository.
func BuildMeshImage(ctx context.Context, moduleDir, dir string) (ImageArchive, error) {
	pkgs := []string{"./cmd/meshproxy"}
	// The controller is moving into a binary of its own; take it once the
	// directory is there, and not before.
	if _, err := os.Stat(filepath.Join(moduleDir, "cmd", "meshcontroller")); err == nil {
		pkgs = append(pkgs, "./cmd/meshcontroller")
	}
	cmd := niceCommand(ctx, "go", append([]string{"build", "-trimpath", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return ImageArchive{}, fmt.Errorf("building %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	im := NewImage(MeshImageRepository+":"+MeshImageTag, "/usr/local/bin/meshproxy")
	for _, p := range pkgs {
		name := filepath.Base(p)
		if err := im.AddHostFile("/usr/local/bin/"+name, filepath.Join(dir, name)); err != nil {
			return ImageArchive{}, err
		}
	}
	im.Add(ImageFile{Path: "/tmp", Mode: 0o777 | os.ModeSticky, Dir: true})
	if err := addIPTables(ctx, im); err != nil {
		return ImageArchive{}, err
	}
	return writeImage(im, dir)
}

func writeImage(im *Image, dir string) (ImageArchive, error) {
	out := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(im.Name)+".tar")
	if err := im.WriteArchive(out); err != nil {
		return ImageArchive{}, err
	}
	return ImageArchive{Name: im.Name, Path: out}, nil
}

// buildStatic builds main packages of this module with CGO_ENABLED=0 into
// dir and returns the binaries' paths.
func buildStatic(ctx context.Context, dir string, pkgs ...string) ([]string, error) {
	cmd := niceCommand(ctx, "go", append([]string{"build", "-trimpath", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	bins := make([]string, len(pkgs))
	for i, p := range pkgs {
		bins[i] = filepath.Join(dir, execName(p))
	}
	return bins, nil
}

// The iptables tools `meshproxy init` may run (internal/proxyinit looks up
// the -nft and -legacy variants and falls back to the plain names).
var (
	nftTools = []string{
		"iptables", "iptables-save", "iptables-restore",
		"ip6tables", "ip6tables-save", "ip6tables-restore",
		"iptables-nft", "iptables-nft-save", "iptables-nft-restore",
		"ip6tables-nft", "ip6tables-nft-save", "ip6tables-nft-restore",
	}
	legacyTools = []string{
		"iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore",
		"ip6tables-legacy", "ip6tables-legacy-save", "ip6tables-legacy-restore",
	}
)

// addIPTables copies the host's iptables into im: Debian's
// xtables-nft-multi (and xtables-legacy-multi when installed) with their
// tool names as symbolic links, the xtables extensions they load at run
// time, every shared library these need (as ldd finds them, at the same
// paths, so the dynamic loader's default search finds them), and an empty
// /run/xtables.lock, which the legacy tools lock and a read-only root
// filesystem could not create. No static iptables is needed.
func addIPTables(ctx context.Context, im *Image) error {
	nft, err := exec.LookPath("xtables-nft-multi")
	if err != nil {
		return fmt.Errorf("the mesh image needs the host's iptables (apt-get install iptables): %w", err)
	}
	dir := filepath.Dir(nft)
	elfs := []string{nft}
	add := func(multi string, tools []string) error {
		if err := im.AddHostFile(filepath.Join(dir, filepath.Base(multi)), multi); err != nil {
			return err
		}
		for _, t := range tools {
			im.Add(ImageFile{Path: filepath.Join(dir, t), Symlink: filepath.Base(multi)})
		}
		return nil
	}
	if err := add(nft, nftTools); err != nil {
		return err
	}
	if legacy, err := exec.LookPath("xtables-legacy-multi"); err == nil {
		if err := add(legacy, legacyTools); err != nil {
			return err
		}
		elfs = append(elfs, legacy)
	}
	exts, _ := filepath.Glob("/usr/lib/*/xtables/*.so")
	if len(exts) == 0 {
		return fmt.Errorf("the mesh image needs the xtables extensions: none under /usr/lib/*/xtables")
	}
	for _, e := range exts {
		if err := im.AddHostFile(e, e); err != nil {
			return err
		}
	}
	libs, err := sharedLibraries(ctx, append(elfs, exts...))
	if err != nil {
		return err
	}
	for _, l := range libs {
		if err := im.AddHostFile(l, l); err != nil {
			return err
		}
	}
	for _, f := range []string{"/etc/protocols", "/etc/services"} {
		if _, err := os.Stat(f); err == nil {
			im.AddHostFile(f, f)
		}
	}
	im.Add(ImageFile{Path: "/run/xtables.lock", Mode: 0o600})
	return nil
}

// lddPath matches the absolute paths in ldd's output: "libc.so.6 =>
// /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2
// (0x...)".
var lddPath = regexp.MustCompile(`(?m)(?:=> |^\s*)(/\S+)`)

// sharedLibraries returns the libraries that the ELF files load, by ldd.
func sharedLibraries(ctx context.Context, files []string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "ldd", files...)
	var out bytes.Buffer
	cmd.Stdout = &out
	// ldd exits non-zero when one of many files is not dynamic; its output
	// still lists the others' libraries.
	if err := cmd.Run(); err != nil && out.Len() == 0 {
		return nil, fmt.Errorf("finding iptables' shared libraries with ldd: %w", err)
	}
	seen := map[string]bool{}
	for _, m := range lddPath.FindAllStringSubmatch(out.String(), -1) {
		p := m[1]
		if strings.HasSuffix(p, ":") || strings.Contains(p, "/xtables/") {
			continue // "file:" headers and the extensions themselves
		}
		seen[p] = true
	}
	libs := make([]string, 0, len(seen))
	for p := range seen {
		libs = append(libs, p)
	}
	sort.Strings(libs)
	return libs, nil
}
