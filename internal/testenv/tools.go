package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Tool is a program the tests run, built from the Go module proxy at an exact
// version into the cache (see GoTool).
type Tool struct {
	Package string
	Version string
}

// Path builds the tool on first use and returns its binary.
func (t Tool) Path(ctx context.Context) (string, error) {
	return GoTool(ctx, t.Package, t.Version)
}

func (t Tool) String() string { return t.Package + "@" + t.Version }

// The conformance and load tools. Their versions live here, once, so that
// `go run ./internal/testenv/prepare` builds exactly what the tests run.
var (
	// H2Spec checks HTTP/2 conformance; v2.2.1 predates Go modules.
	H2Spec = Tool{"github.com/summerwind/h2spec/cmd/h2spec", "v2.2.1+incompatible"}
	// GRPCInteropServer and GRPCInteropClient are gRPC's interoperability
	// test cases.
	GRPCInteropServer = Tool{"google.golang.org/grpc/interop/server", "v1.82.1"}
	GRPCInteropClient = Tool{"google.golang.org/grpc/interop/client", "v1.82.1"}
	// Fortio is the load generator and echo server of the bench harness;
	// later versions need a module the proxy does not serve.
	Fortio = Tool{"fortio.org/fortio", "v1.63.9"}
)

// Helm is the helm CLI of the Helm module this repository renders its chart
// with, so the two never drift: its version is read from go.mod.
func Helm(ctx context.Context) (Tool, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", "helm.sh/helm/v3").Output()
	if err != nil {
		return Tool{}, fmt.Errorf("finding the version of helm.sh/helm/v3: %w", err)
	}
	return Tool{"helm.sh/helm/v3/cmd/helm", strings.TrimSpace(string(out))}, nil
}

// TestTools are the tools `go test ./...` runs; the bench harness's Fortio
// is left to `make bench`.
func TestTools(ctx context.Context) ([]Tool, error) {
	helm, err := Helm(ctx)
	if err != nil {
		return nil, err
	}
	return []Tool{H2Spec, GRPCInteropServer, GRPCInteropClient, helm}, nil
}
