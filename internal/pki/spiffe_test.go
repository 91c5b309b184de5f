package pki

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

func TestValidateSPIFFEID(t *testing.T) {
	valid := []string{
		"spiffe://cluster.local",
		"spiffe://cluster.local/ns/shop/sa/web",
		"spiffe://my_domain-1.example/a/B/c.d/e-f/g_h",
	}
	for _, id := range valid {
		if _, _, err := ValidateSPIFFEID(id); err != nil {
			t.Errorf("ValidateSPIFFEID(%q) = %v, want valid", id, err)
		}
	}
	invalid := map[string]string{
		"":                                     "does not start with",
		"http://cluster.local/ns/a/sa/b":       "does not start with",
		"SPIFFE://cluster.local/ns/a/sa/b":     "does not start with",
		"spiffe://":                            "trust domain is empty",
		"spiffe:///ns/a":                       "trust domain is empty",
		"spiffe://Cluster.local/ns/a/sa/b":     "must be lowercase",
		"spiffe://cluster.local:443/ns/a":      "port is not allowed",
		"spiffe://user@cluster.local/ns/a":     "userinfo is not allowed",
		"spiffe://cluster.local/ns/a?x=1":      "query is not allowed",
		"spiffe://cluster.local?x=1":           "query is not allowed",
		"spiffe://cluster.local/ns/a#frag":     "fragment is not allowed",
		"spiffe://cluster.local#frag":          "fragment is not allowed",
		"spiffe://cluster.local/ns/a%2Fb":      "percent-encoding",
		"spiffe://cluster.local/":              "empty path segment",
		"spiffe://cluster.local/ns//sa/b":      "empty path segment",
		"spiffe://cluster.local/ns/a/":         "empty path segment",
		"spiffe://cluster.local/ns/../sa/b":    `".." is not allowed`,
		"spiffe://cluster.local/./sa/b":        `"." is not allowed`,
		"spiffe://cluster.local/ns/a b":        "not allowed in a path segment",
		"spiffe://clu$ter.local/ns/a":          "not allowed",
		"spiffe://cluster.local/" + long(2050): "more than 2048",
		"spiffe://" + long(256):                "more than 255",
	}
	for id, want := range invalid {
		_, _, err := ValidateSPIFFEID(id)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateSPIFFEID(%.60q) = %v, want an error containing %q", id, err, want)
		}
	}
}

func long(n int) string { return strings.Repeat("a", n) }

func TestWorkloadID(t *testing.T) {
	id, err := NewWorkloadID("cluster.local", "shop", "web")
	if err != nil {
		t.Fatal(err)
	}
	const want = "spiffe://cluster.local/ns/shop/sa/web"
	if id.String() != want {
		t.Errorf("String() = %q, want %q", id, want)
	}
	back, err := ParseWorkloadID(want)
	if err != nil || back != id {
		t.Errorf("ParseWorkloadID(%q) = %+v, %v; want %+v", want, back, err, id)
	}
	for _, bad := range []struct{ td, ns, sa string }{
		{"Cluster.local", "shop", "web"},
		{"cluster.local", "", "web"},
		{"cluster.local", "shop", ""},
		{"cluster.local", "shop/x", "web"},
		{"cluster.local", "..", "web"},
	} {
		if _, err := NewWorkloadID(bad.td, bad.ns, bad.sa); err == nil {
			t.Errorf("NewWorkloadID(%q, %q, %q) accepted", bad.td, bad.ns, bad.sa)
		}
	}
	for _, bad := range []string{
		"spiffe://cluster.local",
		"spiffe://cluster.local/ns/shop",
		"spiffe://cluster.local/ns/shop/sa/web/extra",
		"spiffe://cluster.local/namespace/shop/sa/web",
		"spiffe://cluster.local/ns/shop/serviceaccount/web",
		"spiffe://cluster.local/ns/shop/sa/web?x",
	} {
		if _, err := ParseWorkloadID(bad); err == nil {
			t.Errorf("ParseWorkloadID(%q) accepted", bad)
		}
	}
}

func TestSPIFFEIDOf(t *testing.T) {
	uris := func(ss ...string) []*url.URL {
		var out []*url.URL
		for _, s := range ss {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, u)
		}
		return out
	}
	const id = "spiffe://cluster.local/ns/shop/sa/web"
	if got, err := SPIFFEIDOf(&x509.Certificate{URIs: uris(id)}); err != nil || got != id {
		t.Errorf("SPIFFEIDOf = %q, %v; want %q", got, err, id)
	}
	for name, c := range map[string]struct {
		uris []*url.URL
		want string
	}{
		"none":       {nil, "no URI SAN"},
		"two":        {uris(id, "spiffe://cluster.local/ns/shop/sa/db"), "2 URI SANs"},
		"not spiffe": {uris("https://example.com/x"), "not a SPIFFE id"},
		"bad spiffe": {uris("spiffe://cluster.local:1/ns/shop/sa/web"), "port"},
	} {
		_, err := SPIFFEIDOf(&x509.Certificate{URIs: c.uris})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: SPIFFEIDOf = %v, want an error containing %q", name, err, c.want)
		}
	}
}
