package push

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/promtext/promtexttest"
)

// Every series the push server writes is documented, in the controller's
// metrics table and in the reference of names, and nothing documented under
// the push prefix is missing from the code.
func TestMetricsAreDocumented(t *testing.T) {
	var b strings.Builder
	if err := (&Metrics{}).WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	promtexttest.Parse(t, b.String())
	var written []string
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(b.String(), -1) {
		written = append(written, m[1])
	}
	if !slices.Equal(written, MetricNames) {
		t.Errorf("WriteMetrics writes %q, MetricNames says %q", written, MetricNames)
	}
	for _, doc := range []string{"../../../docs/controller.md", "../../../docs/reference/names.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		documented := map[string]bool{}
		for _, m := range regexp.MustCompile("`(meshctl_controller_push_[a-z_]+)").FindAllStringSubmatch(string(text), -1) {
			documented[m[1]] = true
		}
		for _, name := range MetricNames {
			if !documented[name] {
				t.Errorf("%s does not list %s", doc, name)
			}
			delete(documented, name)
		}
		for name := range documented {
			t.Errorf("%s lists %s, which the push server does not write", doc, name)
		}
	}
}
