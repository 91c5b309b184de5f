package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// result is one phase: one setup at one rate.
type result struct {
	setup         setup
	rate          int // 0: as fast as possible
	qps           float64
	requests      int64
	failed        int64   // responses other than 200, and transport errors
	p50, p90, p99 float64 // seconds
	proxyCPU      float64 // seconds, all proxies of the setup, measured phase only
	peakRSS       int64   // bytes, the largest VmHWM of the setup's proxies
	rounds        int     // how many runs combine() merged into this one
}

// fortioResult is the part of fortio's -json output the harness reads.
type fortioResult struct {
	ActualQPS               float64
	RetCodes                map[string]int64
	ErrorsDurationHistogram struct {
		Count int64
	}
	DurationHistogram struct {
		Count       int64
		Percentiles []struct {
			Percentile float64
			Value      float64
		}
	}
}

// measure brings a setup up in fresh namespaces, warms it up, runs one
// measured phase, and reads the proxies' CPU time and peak memory. Fresh
// proxies per phase make the peak RSS that of this phase's load.
func measure(ctx context.Context, o options, t tools, s setup, rate int, subnet netip.Prefix, lastCPU int) (result, error) {
	e, err := start(ctx, t, s, subnet, lastCPU)
	if err != nil {
		return result{}, err
	}
	defer e.close()

	if o.warmup > 0 {
		if _, err := e.load(ctx, o, t, rate, o.warmup, "warmup"); err != nil {
			return result{}, fmt.Errorf("warming up: %w", err)
		}
	}
	before, err := e.proxyCPU()
	if err != nil {
		return result{}, err
	}
	fr, err := e.load(ctx, o, t, rate, o.duration, "phase")
	if err != nil {
		return result{}, err
	}
	after, err := e.proxyCPU()
	if err != nil {
		return result{}, err
	}
	r := result{setup: s, rate: rate, qps: fr.ActualQPS, requests: fr.DurationHistogram.Count, proxyCPU: after - before}
	r.failed = fr.ErrorsDurationHistogram.Count
	for code, n := range fr.RetCodes {
		if code != "200" {
			r.failed += n
		}
	}
	for _, p := range fr.DurationHistogram.Percentiles {
		switch p.Percentile {
		case 50:
			r.p50 = p.Value
		case 90:
			r.p90 = p.Value
		case 99:
			r.p99 = p.Value
		}
	}
	for _, pid := range e.proxyPIDs {
		rss, err := peakRSS(pid)
		if err != nil {
			return result{}, err
		}
		r.peakRSS = max(r.peakRSS, rss)
	}
	if r.failed > 0 {
		fmt.Fprintf(os.Stderr, "bench: %s: %d of %d requests failed\n", s, r.failed, r.requests)
	}
	return r, nil
}

func (e *env) proxyCPU() (float64, error) {
	total := 0.0
	for _, pid := range e.proxyPIDs {
		s, err := cpuSeconds(pid)
		if err != nil {
			return 0, fmt.Errorf("reading the CPU time of proxy %d: %w", pid, err)
		}
		total += s
	}
	return total, nil
}

// load runs fortio in the client pod against the setup's target.
func (e *env) load(ctx context.Context, o options, t tools, rate int, d time.Duration, name string) (fortioResult, error) {
	out := filepath.Join(t.workDir, name+".json")
	cmd := exec.CommandContext(ctx, t.fortio, "load",
		"-qps", strconv.Itoa(rate), "-c", strconv.Itoa(o.connections), "-t", d.String(),
		"-payload-size", strconv.Itoa(o.payload), "-p", "50,90,99",
		"-quiet", "-json", out, e.target)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := e.client.Start(cmd); err != nil {
		return fortioResult{}, err
	}
	if err := cmd.Wait(); err != nil {
		return fortioResult{}, fmt.Errorf("running fortio load: %w: %s", err, lastLines(stderr.String(), 5))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return fortioResult{}, err
	}
	var fr fortioResult
	if err := json.Unmarshal(b, &fr); err != nil {
		return fortioResult{}, fmt.Errorf("reading fortio's result: %w", err)
	}
	return fr, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// combine merges the rounds of each phase: the median of the rates and
// percentiles, and for CPU the pooled total over all rounds, so CPU per
// request is total CPU over total requests. Peak RSS is the largest seen;
// failures add up.
func combine(results []result) []result {
	type key struct {
		setup setup
		rate  int
	}
	var order []key
	groups := map[key][]result{}
	for _, r := range results {
		k := key{r.setup, r.rate}
		if _, seen := groups[k]; !seen {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []result
	for _, k := range order {
		g := groups[k]
		c := result{setup: k.setup, rate: k.rate}
		c.qps = median(g, func(r result) float64 { return r.qps })
		c.p50 = median(g, func(r result) float64 { return r.p50 })
		c.p90 = median(g, func(r result) float64 { return r.p90 })
		c.p99 = median(g, func(r result) float64 { return r.p99 })
		for _, r := range g {
			c.requests += r.requests
			c.failed += r.failed
			c.proxyCPU += r.proxyCPU
			c.peakRSS = max(c.peakRSS, r.peakRSS)
		}
		c.rounds = len(g)
		out = append(out, c)
	}
	return out
}

func median(g []result, f func(result) float64) float64 {
	v := make([]float64, len(g))
	for i, r := range g {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
