package controller

import (
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/version"
)

// The build's version is whatever the release stamps with -ldflags; a tab
// or a quote in it once came out Go-quoted, which Prometheus' parser
// refuses, and the whole scrape with it.
func TestBuildInfoReadsBackWithPrometheus(t *testing.T) {
	defer func(v, c string) { version.Version, version.Commit = v, c }(version.Version, version.Commit)
	version.Version, version.Commit = "v1.0\tbeta \"ü\"", `c0ffee\`
	var b strings.Builder
	if err := (buildInfo{}).WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	families := promtexttest.Parse(t, b.String())
	if v, ok := promtexttest.Value(families, "meshctl_controller_build_info", "version", version.Version, "commit", version.Commit); !ok || v != 1 {
		t.Errorf("build info read back as %v (found %v):\n%s", v, ok, b.String())
	}
}
