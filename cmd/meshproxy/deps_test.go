package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The sidecar runs in every meshed pod, so what it links is paid for in
// every pod's memory: with the control plane linked it measured 17.5 MB of
// stripped binary and 14.2 MiB of idle RSS, without 9.4 MB and 9.2 MiB
// (docs/benchmarks.md, "Sidecar size"). forbidden names what must never
// come back, with the reason; allowedModules is every module outside the
// standard library the sidecar may link, so that a new one is a decision
// made here rather than a side effect of an import.
var forbidden = []struct{ prefix, why string }{
	{"k8s.io/", "the Kubernetes API machinery and client-go belong to meshcontroller and meshctl"},
	{"sigs.k8s.io/", "Kubernetes libraries belong to meshcontroller and meshctl"},
	{"helm.sh/", "the chart engine belongs to meshctl"},
	{"github.com/spf13/viper", "configuration files and environment binding belong to meshctl"},
	{"github.com/charmbracelet/", "terminal styling belongs to meshctl"},
	{"github.com/prometheus/", "the proxy writes its own exposition format"},
	{"google.golang.org/grpc", "the proxy relays gRPC as HTTP/2 and links no gRPC runtime"},
	{"google.golang.org/protobuf", "the proxy decodes no protobuf"},
	{"github.com/meshctl/mesh/internal/controller", "the control plane is meshcontroller"},
	{"github.com/meshctl/mesh/internal/cli/meshcontroller", "the control plane is meshcontroller"},
	{"github.com/meshctl/mesh/internal/cli/command", "meshctl's command wiring builds Kubernetes clients"},
	{"github.com/meshctl/mesh/internal/install", "installing belongs to meshctl"},
	{"github.com/meshctl/mesh/internal/inject", "injection belongs to meshctl and meshcontroller"},
	{"github.com/meshctl/mesh/internal/kube", "Kubernetes clients belong to meshctl"},
}

var allowedModules = []string{
	"github.com/meshctl/mesh",
	"github.com/spf13/cobra",
	"github.com/spf13/pflag",
	"go.yaml.in/yaml/v2", // the configuration file (internal/proxy/config)
	"golang.org/x/net",   // HTTP/2
	"golang.org/x/text",  // through golang.org/x/net/idna
	"golang.org/x/sys",   // socket options, SO_ORIGINAL_DST
}

// TestSidecarLinksNothingHeavy lists what `go build ./cmd/meshproxy` links
// for the platforms it is released for, and fails on anything forbidden or
// not allowed, once per package or module, with the chain of imports that
// pulls it in.
func TestSidecarLinksNothingHeavy(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH to list the dependencies with")
	}
	reported := map[string]bool{}
	for _, goos := range []string{"linux", "darwin"} {
		cmd := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}} {{with .Module}}{{.Path}}{{else}}std{{end}} {{join .Imports \",\"}}", ".")
		cmd.Env = append(cmd.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("GOOS=%s go list -deps: %v\n%s", goos, err, stderr(err))
		}
		importedBy := map[string]string{} // the first importer go list met
		var pkgs, mods []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			pkg, mod := f[0], f[1]
			if len(f) > 2 {
				for _, imp := range strings.Split(f[2], ",") {
					if _, ok := importedBy[imp]; !ok {
						importedBy[imp] = pkg
					}
				}
			}
			if mod != "std" {
				pkgs, mods = append(pkgs, pkg), append(mods, mod)
			}
		}
		chain := func(pkg string) string {
			path := []string{pkg}
			for p := importedBy[pkg]; p != "" && len(path) < 50; p = importedBy[p] {
				path = append([]string{p}, path...)
			}
			return strings.Join(path, " -> ")
		}
		for i, pkg := range pkgs {
			if f, ok := forbiddenPrefix(pkg); ok {
				if !reported[f.prefix] {
					reported[f.prefix] = true
					t.Errorf("meshproxy (GOOS=%s) links %s: %s\n\timported through %s", goos, pkg, f.why, chain(pkg))
				}
				continue
			}
			if mod := mods[i]; !allowed(mod) && !reported[mod] {
				reported[mod] = true
				t.Errorf("meshproxy (GOOS=%s) links module %s, not in allowedModules: keep it out of the sidecar, or allow it with the reason it is worth its size in every pod\n\timported through %s", goos, mod, chain(pkg))
			}
		}
	}
}

func forbiddenPrefix(pkg string) (f struct{ prefix, why string }, ok bool) {
	for _, f := range forbidden {
		if strings.HasPrefix(pkg, f.prefix) {
			return f, true
		}
	}
	return f, false
}

func allowed(mod string) bool {
	for _, m := range allowedModules {
		if mod == m {
			return true
		}
	}
	return false
}

func stderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
