package check

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/check"
	"github.com/meshctl/mesh/internal/cli/ui"
)

// The example at the top of docs/check.md is what the table printer writes
// to a pipe, with the CLI's own styles: every line of it that is not "..."
// comes out, in order. Glyphs, indentation and the hint line cannot drift
// from the docs without this failing.
func TestDocsExampleMatchesThePrinter(t *testing.T) {
	doc, err := os.ReadFile("../../../../docs/check.md")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(doc), "```\n$ meshctl check\n")
	if start < 0 {
		t.Fatal("docs/check.md has no example of `meshctl check`")
	}
	example := string(doc)[start+len("```\n$ meshctl check\n"):]
	example = example[:strings.Index(example, "```")]

	hint := func(a string) string { return check.HintBase + a }
	results := []check.Result{
		{Category: check.CategoryKubernetesAPI, Description: "can initialize the client", HintURL: hint("k8s-api-client"), Severity: check.Fatal},
		{Category: check.CategoryKubernetesAPI, Description: "can query the Kubernetes API", HintURL: hint("k8s-api-query"), Severity: check.Fatal},
		{Category: check.CategoryPods, Description: "the controller pods are ready", HintURL: hint("cp-pods-ready"),
			Err: errors.New(`pod meshctl-controller-6d4f9c7b5-x2x7q: container controller is waiting: ImagePullBackOff: Back-off pulling image "ghcr.io/meshctl/meshproxy:v0.1.0"`)},
	}
	var out bytes.Buffer
	p, err := check.NewPrinter(check.FormatTable, &out, ui.New(&out, false))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		p.Print(r)
	}
	if err := p.Finish(check.Summary{Success: false, Results: results}); err != nil {
		t.Fatal(err)
	}
	printed := strings.Split(out.String(), "\n")
	i := 0
	for _, want := range strings.Split(strings.TrimRight(example, "\n"), "\n") {
		if want == "..." {
			continue
		}
		for i < len(printed) && printed[i] != want {
			i++
		}
		if i == len(printed) {
			t.Errorf("docs/check.md shows %q, which the printer does not write (in this order); it writes:\n%s", want, out.String())
			return
		}
	}
}
