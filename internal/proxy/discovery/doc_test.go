package discovery

import (
	"os"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// TestMetricsAreDocumented fails when a series is added without its row
// in docs/proxy.md.
func TestMetricsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/proxy.md")
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{addrs: map[string]bool{}}
	c.set.Store(&meshapi.Set{})
	c.compiled = c.set.Load()
	for _, g := range c.Gauges() {
		if !strings.Contains(string(doc), "`"+g.Name+"`") {
			t.Errorf("docs/proxy.md does not describe %s", g.Name)
		}
	}
	var b strings.Builder
	if err := metrics.New().WriteText(&b, c.Gauges()); err != nil {
		t.Fatal(err)
	}
	promtexttest.Parse(t, b.String())
}
