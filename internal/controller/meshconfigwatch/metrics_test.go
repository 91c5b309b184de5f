package meshconfigwatch

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/promtext/promtexttest"
)

func TestMetricsReadBackWithPrometheus(t *testing.T) {
	w := New(nil, "mesh", slog.New(slog.DiscardHandler))
	w.rejected, w.rejects = errors.New("spec.identity: invalid"), 3
	var b strings.Builder
	if err := w.WriteMetrics(&b); err != nil {
		t.Fatal(err)
	}
	families := promtexttest.Parse(t, b.String())
	for name, want := range map[string]float64{
		"meshctl_controller_meshconfig_loaded":         0,
		"meshctl_controller_meshconfig_invalid":        1,
		"meshctl_controller_meshconfig_rejected_total": 3,
	} {
		if got, ok := promtexttest.Value(families, name); !ok || got != want {
			t.Errorf("%s = %v (found %v), want %v", name, got, ok, want)
		}
	}
}
