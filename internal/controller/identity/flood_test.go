package identity_test

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/controller/identity"
	"github.com/meshctl/mesh/internal/wellknown"
)

// A proxy that floods the controller with certificate requests does not
// starve another: its own budget refuses it (429, counted as rate-limited)
// while the other's requests are all issued. The slots and the queue are
// made small so that, without the per-peer bound, the flood would hold
// every slot and fill the queue, and the other proxy would be refused as
// busy.
func TestCertificateFloodDoesNotStarveOthers(t *testing.T) {
	f := setup(t)
	h := &identity.Handler{Reviewer: f.handler.Reviewer, Credentials: f.handler.Credentials, Config: f.handler.Config,
		Logger: f.handler.Logger, Metrics: &identity.Metrics{},
		Limits: identity.Limits{MaxInFlight: 4, MaxQueued: 4, QueueWait: 300 * time.Millisecond,
			MaxInFlightPerPeer: 2, RatePerPeer: 20, BurstPerPeer: 20, Rate: 1e5}}
	f.server.Handle("/limited", h)
	url := "https://" + f.server.Addr().String() + "/limited"
	c := f.client(f.bundle.TrustAnchors)

	web := spiffeID(appNS, "web")
	webToken := f.token(t, appNS, "web", wellknown.IdentityTokenAudience)
	webCSR, _ := csr(t, []string{web})
	floodToken := f.token(t, appNS, "flood", wellknown.IdentityTokenAudience)
	floodCSR, _ := csr(t, []string{spiffeID(appNS, "flood")})

	post := func(token string, body []byte) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	// RBAC reaches the authorizer's cache a moment after the binding.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if code, _ := post(webToken, requestBody(webCSR)); code == http.StatusOK || time.Now().After(deadline) {
			break
		}
	}

	stop := make(chan struct{})
	var flooded, floodLimited atomic.Int64
	var retryAfterMissing atomic.Bool
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, retry := post(floodToken, requestBody(floodCSR))
				flooded.Add(1)
				if code == http.StatusTooManyRequests {
					floodLimited.Add(1)
					if retry == "" {
						retryAfterMissing.Store(true)
					}
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond) // the flood is on
	var refused []int
	for range 10 {
		if code, _ := post(webToken, requestBody(webCSR)); code != http.StatusOK {
			refused = append(refused, code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	if len(refused) > 0 {
		t.Errorf("the other proxy was refused %d of 10 times during the flood (statuses %v)", len(refused), refused)
	}
	if floodLimited.Load() == 0 {
		t.Errorf("the flood (%d requests) was never rate-limited", flooded.Load())
	}
	if got := h.Metrics.RefusedCount(identity.ReasonRateLimited); got != uint64(floodLimited.Load()) {
		t.Errorf("counted %d rate-limited refusals, the flood got %d", got, floodLimited.Load())
	}
	if retryAfterMissing.Load() {
		t.Error("a 429 came without Retry-After")
	}
	if !strings.Contains(f.logs.String(), "reason="+identity.ReasonRateLimited) {
		t.Error("no rate-limited refusal was logged")
	}
	t.Logf("flood: %d requests, %d rate-limited; the other proxy: 10 issued", flooded.Load(), floodLimited.Load())
}
