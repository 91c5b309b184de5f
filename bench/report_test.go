package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// Rounds combine by median for rates and percentiles and by pooling for CPU,
// so one noisy round moves neither.
func TestCombineRounds(t *testing.T) {
	mesh := setup{kind: kindMeshproxy}
	rounds := []result{
		{setup: mesh, rate: 0, qps: 9000, p50: 0.001, p99: 0.010, requests: 90000, proxyCPU: 4, peakRSS: 10 << 20},
		{setup: mesh, rate: 0, qps: 1000, p50: 0.050, p99: 0.500, requests: 10000, proxyCPU: 1, peakRSS: 12 << 20},
		{setup: mesh, rate: 0, qps: 8000, p50: 0.002, p99: 0.020, requests: 80000, proxyCPU: 4, peakRSS: 11 << 20, failed: 2},
	}
	got := combine(rounds)
	if len(got) != 1 {
		t.Fatalf("got %d phases, want 1", len(got))
	}
	c := got[0]
	if c.qps != 8000 || c.p50 != 0.002 || c.p99 != 0.020 {
		t.Errorf("medians: qps %v p50 %v p99 %v; want 8000 0.002 0.020", c.qps, c.p50, c.p99)
	}
	if c.requests != 180000 || c.proxyCPU != 9 || c.peakRSS != 12<<20 || c.failed != 2 || c.rounds != 3 {
		t.Errorf("pooled: %+v", c)
	}
	if perCore := reqPerCore(c); perCore != 20000 {
		t.Errorf("req/s per proxy core = %v, want 20000", perCore)
	}
	pair := c
	pair.setup.pair = true
	if perCore := reqPerCore(pair); perCore != 40000 {
		t.Errorf("two proxies on the path: req/s per proxy core = %v, want 40000", perCore)
	}
}

// A peer whose added latency is not positive gives no ratio and no verdict.
func TestReportRefusesRatiosAgainstNoise(t *testing.T) {
	at := func(k kind, rate int, p50, p99 float64) result {
		return result{setup: setup{kind: k}, rate: rate, qps: 1000, p50: p50, p90: p50, p99: p99, requests: 10000, proxyCPU: 1, rounds: 1}
	}
	results := []result{
		at(kindNone, 1000, 0.001, 0.010), at(kindNone, 0, 0.001, 0.010),
		at(kindMeshproxy, 1000, 0.002, 0.012), at(kindMeshproxy, 0, 0.002, 0.012),
		at(kindHAProxy, 1000, 0.0015, 0.009), at(kindHAProxy, 0, 0.0015, 0.009),
	}
	var b bytes.Buffer
	report(&b, options{rate: 1000, connections: 16, payload: 1024, duration: 10 * time.Second, rounds: 1}, results)
	out := b.String()
	if !strings.Contains(out, "| meshproxy x1 / haproxy x1 | 2.00 | n/a |") {
		t.Errorf("ratio row wrong:\n%s", out)
	}
	if !strings.Contains(out, "added p99 of one meshproxy <= HAProxy's: inconclusive") {
		t.Errorf("p99 verdict should be inconclusive:\n%s", out)
	}
	if !strings.Contains(out, "added p50 of one meshproxy <= HAProxy's: NOT met (1.000 ms vs 0.500 ms)") {
		t.Errorf("p50 verdict wrong:\n%s", out)
	}
}

// The mTLS pairs get their own rows, the new-connection phase its own
// table and ratio, and the memory goals of the sidecar with mTLS.
func TestReportMTLSPairs(t *testing.T) {
	mesh, ha := setup{kind: kindMeshproxyMTLS, pair: true}, setup{kind: kindHAProxyTLS, pair: true}
	results := []result{
		{setup: setup{kind: kindNone}, rate: 1000, p50: 0.001, p90: 0.001, p99: 0.002, requests: 10000, rounds: 1},
		{setup: setup{kind: kindNone}, rate: 0, requests: 10000, rounds: 1},
		{setup: mesh, rate: 1000, p50: 0.0015, p90: 0.0015, p99: 0.003, requests: 10000, proxyCPU: 1, idleRSS: 9 << 20, peakRSS: 12 << 20, rounds: 1},
		{setup: mesh, rate: 0, requests: 30000, proxyCPU: 2, rounds: 1},
		{setup: mesh, newConns: true, qps: 500, requests: 5000, proxyCPU: 4, rounds: 1},
		{setup: ha, rate: 1000, p50: 0.002, p90: 0.002, p99: 0.004, requests: 10000, proxyCPU: 1, idleRSS: 8 << 20, peakRSS: 9 << 20, rounds: 1},
		{setup: ha, rate: 0, requests: 20000, proxyCPU: 2, rounds: 1},
		{setup: ha, newConns: true, qps: 400, requests: 4000, proxyCPU: 2, rounds: 1},
	}
	var b bytes.Buffer
	report(&b, options{rate: 1000, connections: 16, payload: 1024, duration: 10 * time.Second, rounds: 1, shape: shapeGet}, results)
	out := b.String()
	for _, want := range []string{
		"GET of 1024-byte responses",
		"| meshproxy-mtls x2 | 500 | 0.000 | 0.000 | 0.40 | 2500 | 0 |",
		"| meshproxy-mtls x2 / haproxy-tls x2 | 0.50 | 0.50 | 1.50 | 1.00 | 1.33 |",
		"| meshproxy-mtls x2 / haproxy-tls x2, new connections | | | 0.62 (connections/s per core) | | |",
		"- req/s per proxy core of a meshproxy pair with mTLS >= HAProxy's: met (30000 vs 20000)",
		"- idle RSS with mTLS <= 10 MB: met (9.0 MiB = 9.4 MB, of which anonymous 0.0 MiB)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
