package suggest

import (
	"slices"
	"testing"
)

func TestNearest(t *testing.T) {
	keys := slices.Values([]string{"connectTimeout", "idleTimeout", "requestTimeout", "Deployment", "DaemonSet"})
	for name, want := range map[string]string{
		"conectTimeout": "connectTimeout",
		"IDLETIMEOUT":   "idleTimeout",
		"Deployement":   "Deployment",
		"timeout":       "",
		"":              "",
	} {
		if got := Nearest(name, keys, 2); got != want {
			t.Errorf("Nearest(%q) = %q, want %q", name, got, want)
		}
	}
	// Of two as close, the first in byte order.
	if got := Nearest("ab", slices.Values([]string{"ac", "aa"}), 1); got != "aa" {
		t.Errorf("tie: %q", got)
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"flaw", "lawn", 2}} {
		if got := Distance(tc.a, tc.b); got != tc.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
