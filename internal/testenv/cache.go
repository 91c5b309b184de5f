// Package testenv gives tests real components: a kube-apiserver with etcd and
// kube-controller-manager, a real node to join to it (StartNode: containerd,
// kubelet, kube-proxy, kube-scheduler), and the conformance and load tools,
// each built from the Go module proxy into a cache outside the repository on
// first use, so only the first run on a machine pays for the build.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CacheDir is where built components live: $MESHCTL_TEST_CACHE, else
// $XDG_CACHE_HOME/meshctl-test, else ~/.cache/meshctl-test.
func CacheDir() (string, error) {
	if d := os.Getenv("MESHCTL_TEST_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the user cache directory: %w", err)
	}
	return filepath.Join(base, "meshctl-test"), nil
}

// GoTool returns the path of the binary that `go install pkg@version` builds,
// building it into the cache first if it is not there yet. pkg is the main
// package's import path; version must be exact (not "latest") so that the
// cache key means one thing.
func GoTool(ctx context.Context, pkg, version string) (string, error) {
	if version == "" || version == "latest" {
		return "", fmt.Errorf("installing %s: an exact version is required, got %q", pkg, version)
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(dir, "tools", strings.ReplaceAll(pkg, "/", "_")+"@"+version)
	bin := filepath.Join(binDir, filepath.Base(pkg))
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	// go test runs packages in parallel processes: lock across them, then
	// look again in case another process installed it meanwhile.
	unlock, err := lockCache(ctx, dir, "tool-"+filepath.Base(binDir))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	// Build into a temporary directory and rename, so that an interrupted
	// build never leaves a half-written binary behind a valid cache key.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating cache directory: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".install-")
	if err != nil {
		return "", fmt.Errorf("creating cache directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "install", pkg+"@"+version)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false")
	cmd.Dir = tmp // outside any module, so the project's go.mod does not apply
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("installing %s@%s: %w\n%s", pkg, version, err, out)
	}
	if err := os.MkdirAll(filepath.Dir(binDir), 0o755); err != nil {
		return "", fmt.Errorf("creating cache directory: %w", err)
	}
	if err := os.Rename(tmp, binDir); err != nil {
		return "", fmt.Errorf("moving %s into the cache: %w", pkg, err)
	}
	return bin, nil
}
