package install

import "testing"

func TestIsDevelopmentTag(t *testing.T) {
	for tag, want := range map[string]bool{
		"dev":                                true,
		"v0.2.0-dev":                         true,
		"v0.0.0-20261201051000-0123456789ab": true,
		"v0.1.0-dirty":                       true,
		"v0.1.0":                             false,
		"v0.2.0-rc.1":                        false,
		"1.4":                                false,
	} {
		if got := IsDevelopmentTag(tag); got != want {
			t.Errorf("IsDevelopmentTag(%q) = %v, want %v", tag, got, want)
		}
	}
}
