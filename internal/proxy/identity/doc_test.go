package identity

import (
	"os"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// TestMetricsAreDocumented fails when a series or a reason is added
// without its row in docs/proxy.md.
func TestMetricsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/proxy.md")
	if err != nil {
		t.Fatal(err)
	}
	i := &Identity{id: idWeb, trust: &Trust{}, clock: wallClock{}}
	i.trust.cur.Store(&trustState{})
	for _, g := range i.Gauges() {
		if !strings.Contains(string(doc), "`"+g.Name+"`") {
			t.Errorf("docs/proxy.md does not describe %s", g.Name)
		}
	}
	var b strings.Builder
	if err := metrics.New().WriteText(&b, i.Gauges()); err != nil {
		t.Fatal(err)
	}
	promtexttest.Parse(t, b.String())
	for _, r := range FailureReasons {
		if !strings.Contains(string(doc), "`"+r+"`") {
			t.Errorf("docs/proxy.md does not describe the failure reason %s", r)
		}
	}
}
