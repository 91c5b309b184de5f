package identity

import (
	"net/http"
	"testing"
)

// A refusal is counted under the controller's reason when the contract
// names it (load shedding included), and as the proxy's own reason when
// something else answered.
func TestErrorResponseReasons(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   string
	}{
		{http.StatusTooManyRequests, `{"apiVersion":"meshapi.meshctl.dev/v1","status":429,"reason":"rate-limited","error":"slow down"}`, "rate-limited"},
		{http.StatusServiceUnavailable, `{"apiVersion":"meshapi.meshctl.dev/v1","status":503,"reason":"busy","error":"busy"}`, "busy"},
		{http.StatusForbidden, `{"apiVersion":"meshapi.meshctl.dev/v1","status":403,"reason":"wrong-identity","error":"no"}`, "wrong-identity"},
		{http.StatusForbidden, `{"apiVersion":"meshapi.meshctl.dev/v1","status":403,"reason":"new-in-a-later-version","error":"no"}`, ReasonUnknown},
		{http.StatusServiceUnavailable, `upstream connect error`, ReasonUnreachable},
		{http.StatusTeapot, `<html>`, ReasonInvalidResponse},
	} {
		if got := ReasonOf(errorResponse(tc.status, []byte(tc.body))); got != tc.want {
			t.Errorf("%d %s: reason %q, want %q", tc.status, tc.body, got, tc.want)
		}
	}
}
