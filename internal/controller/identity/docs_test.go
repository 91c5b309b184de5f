package identity_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/controller/identity"
	"github.com/meshctl/mesh/internal/controller/meshapiserver"
	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/wellknown"
)

// TestDocsListMetricsReasonsAndPort keeps docs/controller.md and
// docs/reference/names.md in step with the series identity issuance and
// the mesh API expose, the refusal reasons and the port.
func TestDocsListMetricsReasonsAndPort(t *testing.T) {
	controllerDoc, err := os.ReadFile("../../../docs/controller.md")
	if err != nil {
		t.Fatal(err)
	}
	namesDoc, err := os.ReadFile("../../../docs/reference/names.md")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := meshapiserver.New(meshapiserver.Options{
		Address: "127.0.0.1:0", MeshNamespace: "docs",
		Credentials: identity.NewCredentials(t.TempDir(), t.TempDir(), nil),
		Config:      func() (meshconfig.Spec, error) { return meshconfig.Spec{}, errors.New("none") },
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	(&identity.Metrics{IssuerNotAfter: func() time.Time { return time.Time{} }}).WriteMetrics(&out)
	srv.WriteMetrics(&out)
	promtexttest.Parse(t, out.String())
	var names []string
	for line := range strings.Lines(out.String()) {
		if f := strings.Fields(line); len(f) == 4 && f[1] == "TYPE" {
			names = append(names, f[2])
		}
	}
	if len(names) != 5 {
		t.Fatalf("found %d series, want 5:\n%s", len(names), out.String())
	}
	for _, n := range names {
		if !bytes.Contains(controllerDoc, []byte("| `"+n)) {
			t.Errorf("docs/controller.md has no row for the series %s", n)
		}
		if !bytes.Contains(namesDoc, []byte("`"+n)) {
			t.Errorf("docs/reference/names.md does not name the series %s", n)
		}
	}
	for _, r := range []string{meshapi.ReasonUnauthenticated, meshapi.ReasonWrongAudience, meshapi.ReasonBadRequest, meshapi.ReasonWrongIdentity, meshapi.ReasonInternal, identity.ReasonRateLimited, identity.ReasonBusy} {
		if !bytes.Contains(controllerDoc, []byte("| `"+r+"` |")) {
			t.Errorf("docs/controller.md has no row for the refusal reason %s", r)
		}
		if !strings.Contains(out.String(), `reason="`+r+`"`) {
			t.Errorf("the metrics do not count the reason %s", r)
		}
	}
	port := strconv.Itoa(wellknown.ControllerMeshAPIPort)
	if !bytes.Contains(namesDoc, []byte("| "+port+" |")) || !bytes.Contains(controllerDoc, []byte("| "+port+" |")) {
		t.Errorf("the docs do not list the mesh API port %s", port)
	}
}
