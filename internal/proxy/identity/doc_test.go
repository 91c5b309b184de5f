package identity

import (
	"os"
	"strings"
	"testing"
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
	for _, r := range FailureReasons {
		if !strings.Contains(string(doc), "`"+r+"`") {
			t.Errorf("docs/proxy.md does not describe the failure reason %s", r)
		}
	}
}
