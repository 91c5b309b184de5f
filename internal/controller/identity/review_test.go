package identity

import (
	"encoding/base64"
	"testing"
)

func TestServiceAccountOf(t *testing.T) {
	for user, want := range map[string][2]string{
		"system:serviceaccount:shop:web": {"shop", "web"},
		"system:serviceaccount:shop:":    {},
		"system:serviceaccount::web":     {},
		"system:serviceaccount:shop":     {},
		"system:serviceaccount:a:b:c":    {},
		"testenv-admin":                  {},
		"system:node:n1":                 {},
	} {
		ns, sa, ok := serviceAccountOf(user)
		if ok != (want[0] != "") || ns != want[0] || sa != want[1] {
			t.Errorf("serviceAccountOf(%q) = %q, %q, %v; want %q", user, ns, sa, ok, want)
		}
	}
}

func TestClaimedAudiences(t *testing.T) {
	jwt := func(payload string) string {
		return "e30." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
	}
	for token, want := range map[string][]string{
		jwt(`{"aud":"a"}`):       {"a"},
		jwt(`{"aud":["a","b"]}`): {"a", "b"},
		jwt(`{"sub":"x"}`):       nil,
		jwt(`not json`):          nil,
		"opaque-static-token":    nil,
		"a.!!!.c":                nil,
	} {
		got := claimedAudiences(token)
		if len(got) != len(want) {
			t.Errorf("claimedAudiences(%q) = %q, want %q", token, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("claimedAudiences(%q) = %q, want %q", token, got, want)
			}
		}
	}
}
