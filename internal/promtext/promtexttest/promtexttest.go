// Package promtexttest reads an exposition back with Prometheus' own text
// parser, for the tests of every package that writes metrics. Only tests
// import it, so the parser (prometheus/common) is never linked into a
// binary.
package promtexttest

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Parse parses text as Prometheus does when it scrapes, and fails the test
// if the parser refuses it, if a family has no HELP or no TYPE, or if a
// family's lines are not one group (the format requires it; the parser
// lets a split family pass). It returns the families by name.
func Parse(t testing.TB, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Prometheus' text parser refuses the exposition: %v\n%s", err, text)
	}
	for name, f := range families {
		if f.Help == nil {
			t.Errorf("family %s has no HELP line", name)
		}
		if f.GetType() == dto.MetricType_UNTYPED {
			t.Errorf("family %s has no TYPE line", name)
		}
	}
	ended := map[string]bool{}
	current := ""
	for _, line := range strings.Split(text, "\n") {
		name := familyOf(line, families)
		if name == "" || name == current {
			continue
		}
		if ended[name] {
			t.Errorf("family %s is written in two groups; its second starts at %q", name, line)
		}
		if current != "" {
			ended[current] = true
		}
		current = name
	}
	return families
}

// familyOf is the family a line belongs to: the name after # HELP or
// # TYPE, or a sample's name less a histogram's suffix.
func familyOf(line string, families map[string]*dto.MetricFamily) string {
	if rest, ok := strings.CutPrefix(line, "# HELP "); ok {
		name, _, _ := strings.Cut(rest, " ")
		return name
	}
	if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
		name, _, _ := strings.Cut(rest, " ")
		return name
	}
	if line == "" || line[0] == '#' {
		return ""
	}
	name := line[:strings.IndexAny(line+" ", "{ ")]
	if _, ok := families[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if _, ok := families[base]; ok {
				return base
			}
		}
	}
	return name
}

// Value returns the value of the sample of family name whose labels
// include every pair of labels (name, value, name, value, ...), and
// whether there is one: a counter's or gauge's value, a histogram's count.
func Value(families map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}
