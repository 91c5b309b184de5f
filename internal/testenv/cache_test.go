package testenv_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/testenv"
)

// Parallel test processes (and goroutines) asking for the same tool must
// get it built once and all get its path; without the cache lock the
// second one's rename into the cache fails. h2i is a small main package in
// a module the repository already depends on.
func TestGoToolConcurrentInstalls(t *testing.T) {
	t.Setenv("MESHCTL_TEST_CACHE", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const pkg, version = "golang.org/x/net/http2/h2i", "v0.62.0"
	var wg sync.WaitGroup
	paths := make([]string, 3)
	errs := make([]error, 3)
	for i := range paths {
		wg.Go(func() { paths[i], errs[i] = testenv.GoTool(ctx, pkg, version) })
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil {
			t.Fatalf("install %d: %v", i, errs[i])
		}
		if paths[i] != paths[0] {
			t.Errorf("install %d returned %s, install 0 %s", i, paths[i], paths[0])
		}
	}
	if fi, err := os.Stat(paths[0]); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("installed tool %s: %v, mode %v", paths[0], err, fi)
	}
	if _, err := testenv.GoTool(ctx, pkg, "latest"); err == nil {
		t.Error(`GoTool accepted version "latest", which would make the cache key mean several things`)
	}
}
