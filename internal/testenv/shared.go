package testenv

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// One env per test binary, started by the first test that asks for it, so
// that a package's tests share its cost (about 10 s) and `go test -run` on
// tests that need no cluster pays nothing.
var shared struct {
	main bool // Main is running the tests
	opts Options
	once sync.Once
	env  *Env
	err  error
}

// sharedStartTimeout bounds a shared env's build and start. A cold build
// takes minutes; `go run ./internal/testenv/prepare` does it before `go
// test` so that the test binary's own timeout is not spent on it.
const sharedStartTimeout = 20 * time.Minute

// Main runs a package's tests with a shared env and stops the env
// afterwards; call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }
//
// Tests then call Shared. Build and start messages go to stderr unless
// opts.Logf says otherwise. When tests fail, the env's directory is kept
// and its path printed, for the components' logs.
func Main(m *testing.M, opts Options) int {
	if opts.Logf == nil {
		opts.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	shared.main, shared.opts = true, opts
	code := m.Run()
	if shared.env != nil {
		if code != 0 {
			shared.env.opts.KeepDir = true
		}
		if err := shared.env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stopping: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns the package's env, starting it on first use. It fails the
// test (never skips it) when the env cannot be built or started, with the
// tail of the failing component's log; every later caller fails with the same
// error. Tests sharing the env should work in namespaces of their own.
func Shared(t testing.TB) *Env {
	t.Helper()
	if !shared.main {
		t.Fatal("testenv.Shared needs the package's TestMain to call testenv.Main, which stops the env after the tests")
	}
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), sharedStartTimeout)
		defer cancel()
		shared.env, shared.err = Start(ctx, shared.opts)
	})
	if shared.err != nil {
		t.Fatalf("starting the test environment: %v", shared.err)
	}
	if err := shared.env.Alive(); err != nil {
		t.Fatalf("test environment: %v", err)
	}
	return shared.env
}
