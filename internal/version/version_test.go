package version

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestLabelValueIsAValidLabel(t *testing.T) {
	long := "v1.0.0-" + strings.Repeat("a", 70)
	for in, want := range map[string]string{
		"v0.1.0":                              "v0.1.0",
		"dev":                                 "dev",
		"v0.0.0-20261121153800-eba67ad+dirty": "v0.0.0-20261121153800-eba67ad_dirty",
		"v1.2.3-rc.1+build.":                  "v1.2.3-rc.1_build",
		long:                                  long[:63],
	} {
		got := LabelValue(in)
		if got != want {
			t.Errorf("LabelValue(%q) = %q, want %q", in, got, want)
		}
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Errorf("LabelValue(%q) = %q is not a label value: %v", in, got, errs)
		}
	}
}
