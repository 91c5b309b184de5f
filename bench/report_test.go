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
