package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The control plane's versions. The recipes under recipes/ pin every
// dependency; change a version there and here together.
const (
	KubeVersion = "v1.36.3"
	EtcdVersion = "v3.5.17"
)

// recipes holds one throwaway module per component: go.mod, go.sum and a
// build-tagged tools.go, stored with a .txt suffix so that the go command
// does not take them for a module nested inside ours. k8s.io/kubernetes and
// etcd's server cannot be `go install`ed (their go.mod files replace sibling
// modules with local paths), so they are built from such a module instead.
//
//go:embed recipes
var recipes embed.FS

// Binaries are the paths of the built control-plane components.
type Binaries struct {
	Etcd                  string
	KubeAPIServer         string
	KubeControllerManager string
}

// recipe says how to build one component from its throwaway module.
type recipe struct {
	name     string   // directory under recipes/ and prefix of the cache key
	version  string   // the component's version, part of the cache key
	packages []string // main packages to build
	ldflags  string
}

// kubeLDFlags stamp the Kubernetes version: without it the server reports
// v0.0.0-master, which clients (kubectl among them) cannot parse, and the
// kubelet would register a node of that version.
const kubeLDFlags = "-X k8s.io/component-base/version.gitVersion=" + KubeVersion +
	" -X k8s.io/component-base/version.gitMajor=1" +
	" -X k8s.io/component-base/version.gitMinor=36"

var (
	kubeRecipe = recipe{
		name:    "kube",
		version: KubeVersion,
		packages: []string{
			"k8s.io/kubernetes/cmd/kube-apiserver",
			"k8s.io/kubernetes/cmd/kube-controller-manager",
		},
		ldflags: kubeLDFlags,
	}
	// nodeRecipe is the real node's Kubernetes side (see StartNode). It is a
	// module of its own, not more packages in kubeRecipe, so that adding it
	// did not change kube-apiserver's cache key; the two share the Go build
	// cache, so after kube-apiserver the kubelet takes about half a minute
	// to build, not five. Its go.mod has two replace lines more than
	// kubeRecipe's, for k8s.io/cri-streaming and k8s.io/streaming, which
	// only the kubelet needs (without them the module proxy answers 403 for
	// their v0.0.0).
	nodeRecipe = recipe{
		name:    "node",
		version: KubeVersion,
		packages: []string{
			"k8s.io/kubernetes/cmd/kubelet",
			"k8s.io/kubernetes/cmd/kube-proxy",
			"k8s.io/kubernetes/cmd/kube-scheduler",
		},
		ldflags: kubeLDFlags,
	}
	etcdRecipe = recipe{
		name:     "etcd",
		version:  EtcdVersion,
		packages: []string{"go.etcd.io/etcd/server/v3"},
	}
)

// BuildBinaries returns the control-plane binaries, building any that the
// cache does not hold yet. The first build on a machine takes minutes (about
// 8 for kube-apiserver on 2 cores); later calls only stat the files. Safe to
// call from parallel test processes: a file lock in the cache directory lets
// one build while the others wait. logf, if not nil, hears about builds.
func BuildBinaries(ctx context.Context, logf func(format string, args ...any)) (Binaries, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	etcdDir, err := etcdRecipe.ensure(ctx, logf)
	if err != nil {
		return Binaries{}, err
	}
	kubeDir, err := kubeRecipe.ensure(ctx, logf)
	if err != nil {
		return Binaries{}, err
	}
	return Binaries{
		Etcd:                  filepath.Join(etcdDir, execName(etcdRecipe.packages[0])),
		KubeAPIServer:         filepath.Join(kubeDir, "kube-apiserver"),
		KubeControllerManager: filepath.Join(kubeDir, "kube-controller-manager"),
	}, nil
}

// NodeBinaries are the paths of the real node's Kubernetes components.
type NodeBinaries struct {
	Kubelet       string
	KubeProxy     string
	KubeScheduler string
}

// BuildNodeBinaries returns the real node's binaries (see StartNode),
// building them on first use like BuildBinaries. Build kube-apiserver first
// (BuildBinaries): most packages are shared, and the kubelet then takes
// about half a minute instead of five.
func BuildNodeBinaries(ctx context.Context, logf func(format string, args ...any)) (NodeBinaries, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir, err := nodeRecipe.ensure(ctx, logf)
	if err != nil {
		return NodeBinaries{}, err
	}
	return NodeBinaries{
		Kubelet:       filepath.Join(dir, "kubelet"),
		KubeProxy:     filepath.Join(dir, "kube-proxy"),
		KubeScheduler: filepath.Join(dir, "kube-scheduler"),
	}, nil
}

// key names the cache entry: the version for people, a hash of the recipe so
// that editing go.mod or the flags never reuses a stale build.
func (r recipe) key() (string, error) {
	h := sha256.New()
	files, err := fs.ReadDir(recipes, path.Join("recipes", r.name))
	if err != nil {
		return "", fmt.Errorf("reading the %s recipe: %w", r.name, err)
	}
	for _, f := range files {
		b, err := recipes.ReadFile(path.Join("recipes", r.name, f.Name()))
		if err != nil {
			return "", fmt.Errorf("reading the %s recipe: %w", r.name, err)
		}
		fmt.Fprintf(h, "%s %d\n", f.Name(), len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "packages %q\nldflags %q\n", r.packages, r.ldflags)
	return r.name + "-" + r.version + "-" + hex.EncodeToString(h.Sum(nil))[:12], nil
}

// ensure returns the cache directory holding the recipe's binaries, building
// them first if needed.
func (r recipe) ensure(ctx context.Context, logf func(string, ...any)) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	key, err := r.key()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "bin", key)
	if complete(dir, r) {
		return dir, nil
	}
	unlock, err := lockCache(ctx, cache, r.name)
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have built it while this one waited for the lock.
	if complete(dir, r) {
		return dir, nil
	}
	logf("testenv: building %s %s into %s (minutes on the first run on a machine)", r.name, r.version, dir)
	start := time.Now()
	if err := r.build(ctx, cache, dir); err != nil {
		return "", err
	}
	logf("testenv: built %s %s in %s", r.name, r.version, time.Since(start).Round(time.Second))
	return dir, nil
}

func complete(dir string, r recipe) bool {
	for _, p := range r.packages {
		if _, err := os.Stat(filepath.Join(dir, execName(p))); err != nil {
			return false
		}
	}
	return true
}

// execName is the file name go build gives the binary of main package pkg:
// the last path element that is not a major version suffix, so etcd's
// go.etcd.io/etcd/server/v3 becomes "server".
func execName(pkg string) string {
	base := path.Base(pkg)
	if len(base) > 1 && base[0] == 'v' && strings.Trim(base[1:], "0123456789") == "" {
		return path.Base(path.Dir(pkg))
	}
	return base
}

// build writes the throwaway module into a temporary directory, builds there
// and renames the output directory into place, so a build that is
// interrupted never leaves half a binary behind a valid key.
func (r recipe) build(ctx context.Context, cache, dir string) error {
	tmp, err := os.MkdirTemp(cache, ".build-"+r.name+"-")
	if err != nil {
		return fmt.Errorf("creating build directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	out := filepath.Join(tmp, "out")
	for _, d := range []string{src, out} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("creating build directory: %w", err)
		}
	}
	for _, name := range []string{"go.mod", "go.sum", "tools.go"} {
		b, err := recipes.ReadFile(path.Join("recipes", r.name, name+".txt"))
		if err != nil {
			return fmt.Errorf("reading the %s recipe: %w", r.name, err)
		}
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			return fmt.Errorf("writing the %s module: %w", r.name, err)
		}
	}
	// The same tags and ldflags as every other build of this recipe, so that
	// the Go build cache serves all packages and only the link runs again.
	args := []string{"build", "-tags", "tools", "-o", out + string(filepath.Separator)}
	if r.ldflags != "" {
		args = append(args, "-ldflags", r.ldflags)
	}
	args = append(args, r.packages...)
	cmd := niceCommand(ctx, "go", args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s %s: %w\n%s", r.name, r.version, err, tail(log.Bytes(), 40))
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("creating cache directory: %w", err)
	}
	// A leftover from an older, interrupted layout would make the rename fail.
	os.RemoveAll(dir)
	if err := os.Rename(out, dir); err != nil {
		return fmt.Errorf("moving %s into the cache: %w", r.name, err)
	}
	return nil
}

// niceCommand runs name at a lower priority when nice(1) exists: builds share
// the machine with tests that measure time.
func niceCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	if nice, err := exec.LookPath("nice"); err == nil {
		return exec.CommandContext(ctx, nice, append([]string{"-n", "10", name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// lockCache takes an exclusive file lock named after what is being built, so
// that parallel test processes (go test runs packages in parallel) build each
// thing once. The lock dies with the process, so a killed build never blocks
// the next one.
func lockCache(ctx context.Context, cache, name string) (unlock func(), err error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("creating cache directory: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(cache, ".lock-"+name), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the cache lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("locking the cache: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another process building %s: %w", name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// tail returns the last n lines of b, for error messages.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
