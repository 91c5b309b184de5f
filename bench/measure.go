package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// phase is what the load generator does in one measured phase.
type phase struct {
	rate int // requests per second; 0: as fast as possible
	// newConns: every request on a new connection (keep-alive off), as
	// fast as possible, to measure connection setup; the mTLS setups
	// then forward TCP, so that each client connection is one TLS
	// connection between the proxies.
	newConns bool
}

func (ph phase) String() string {
	switch {
	case ph.newConns:
		return "conns"
	case ph.rate == 0:
		return "max"
	}
	return fmt.Sprint(ph.rate)
}

// result is one phase of one setup.
type result struct {
	setup         setup
	rate          int  // 0: as fast as possible
	newConns      bool // see phase
	qps           float64
	requests      int64
	failed        int64   // responses other than 200, and transport errors
	p50, p90, p99 float64 // seconds
	proxyCPU      float64 // seconds, all proxies of the setup, measured phase only
	peakRSS       int64   // bytes, the largest VmHWM of the setup's proxies
	idleRSS       int64   // bytes, the largest VmRSS of the setup's proxies before any load
	idleAnon      int64   // bytes, the RssAnon of that proxy: its private memory
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
func measure(ctx context.Context, o options, t tools, s setup, ph phase, round int, subnet netip.Prefix, lastCPU int) (result, error) {
	e, err := start(ctx, o, t, s, ph, subnet, lastCPU)
	if err != nil {
		return result{}, err
	}
	defer e.close()
	r := result{setup: s, rate: ph.rate, newConns: ph.newConns}

	// Idle memory: the proxies started, ready (with mTLS: certificate
	// and configuration from the controller held), no request yet.
	time.Sleep(idleSettle)
	for _, pid := range e.proxyPIDs {
		rss, err := statusKB(pid, "VmRSS:")
		if err != nil {
			return result{}, err
		}
		anon, err := statusKB(pid, "RssAnon:")
		if err != nil {
			return result{}, err
		}
		if rss > r.idleRSS {
			r.idleRSS, r.idleAnon = rss, anon
		}
	}

	if o.warmup > 0 {
		if _, err := e.load(ctx, o, t, ph, o.warmup, "warmup"); err != nil {
			return result{}, fmt.Errorf("warming up: %w", err)
		}
	}
	var profiles chan error
	if o.cpuProfile != "" && ph.rate == 0 && !ph.newConns && len(e.meshproxies) > 0 {
		profiles = e.profile(o, fmt.Sprintf("%s-%s-round%d", strings.ReplaceAll(s.String(), " ", ""), ph, round))
	}
	before, err := e.proxyCPU()
	if err != nil {
		return result{}, err
	}
	fr, err := e.load(ctx, o, t, ph, o.duration, "phase")
	if err != nil {
		return result{}, err
	}
	after, err := e.proxyCPU()
	if err != nil {
		return result{}, err
	}
	if profiles != nil {
		if err := <-profiles; err != nil {
			return result{}, fmt.Errorf("taking a CPU profile: %w", err)
		}
	}
	r.qps, r.requests, r.proxyCPU = fr.ActualQPS, fr.DurationHistogram.Count, after-before
	if s.kind == kindMeshproxyMTLS {
		if err := e.checkMTLS(); err != nil {
			return result{}, err
		}
	}
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
		rss, err := statusKB(pid, "VmHWM:")
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

// idleSettle is how long the proxies sit ready before their idle memory
// is read.
const idleSettle = time.Second

// profile takes a CPU profile of every meshproxy of the setup over the
// coming measured phase, through its admin API (loopback only, which the
// harness reaches inside the pod), and writes it to the -cpuprofile
// directory as <name>-<side>.pprof. The channel gets the outcome once all
// are written.
func (e *env) profile(o options, name string) chan error {
	done := make(chan error, 1)
	go func() {
		errs := make(chan error, len(e.meshproxies))
		for _, p := range e.meshproxies {
			go func() {
				secs := int(o.duration.Round(time.Second) / time.Second)
				status, body, err := adminRequest(p, http.MethodPost, fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(secs, 1)), o.duration+30*time.Second)
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("%d: %s", status, body)
				}
				if err == nil {
					err = os.WriteFile(filepath.Join(o.cpuProfile, name+"-"+p.Name+".pprof"), body, 0o644)
				}
				errs <- err
			}()
		}
		var all []error
		for range e.meshproxies {
			all = append(all, <-errs)
		}
		done <- errors.Join(all...)
	}()
	return done
}

// checkMTLS makes sure the meshproxy pair spoke mesh TLS: the server
// pod's proxy counted connections from the client's verified identity.
// (Strict mode refuses plaintext anyway; this catches a setup that sent
// the load somewhere else.)
func (e *env) checkMTLS() error {
	status, body, err := adminRequest(e.server, http.MethodGet, "/metrics", 5*time.Second)
	if err != nil {
		return fmt.Errorf("reading the server proxy's metrics: %w", err)
	}
	want := fmt.Sprintf("meshproxy_mtls_connections_total{direction=\"inbound\",peer_identity=%q} ", clientID)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, want); ok && status == http.StatusOK {
			if n, _ := strconv.ParseFloat(v, 64); n > 0 {
				return nil
			}
		}
	}
	return fmt.Errorf("the server pod's meshproxy counted no mesh TLS connection from %s", clientID)
}

// load runs fortio in the client pod against the setup's target.
func (e *env) load(ctx context.Context, o options, t tools, ph phase, d time.Duration, name string) (fortioResult, error) {
	out := filepath.Join(t.workDir, name+".json")
	args := []string{"load", "-qps", strconv.Itoa(ph.rate), "-c", strconv.Itoa(o.connections), "-t", d.String(),
		"-p", "50,90,99", "-quiet", "-json", out}
	if o.shape == shapeEcho {
		args = append(args, "-payload-size", strconv.Itoa(o.payload))
	}
	if ph.newConns {
		args = append(args, "-keepalive=false")
	}
	cmd := exec.CommandContext(ctx, t.fortio, append(args, e.target)...)
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
		setup    setup
		rate     int
		newConns bool
	}
	var order []key
	groups := map[key][]result{}
	for _, r := range results {
		k := key{r.setup, r.rate, r.newConns}
		if _, seen := groups[k]; !seen {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []result
	for _, k := range order {
		g := groups[k]
		c := result{setup: k.setup, rate: k.rate, newConns: k.newConns}
		c.qps = median(g, func(r result) float64 { return r.qps })
		c.p50 = median(g, func(r result) float64 { return r.p50 })
		c.p90 = median(g, func(r result) float64 { return r.p90 })
		c.p99 = median(g, func(r result) float64 { return r.p99 })
		for _, r := range g {
			c.requests += r.requests
			c.failed += r.failed
			c.proxyCPU += r.proxyCPU
			c.peakRSS = max(c.peakRSS, r.peakRSS)
			if r.idleRSS > c.idleRSS {
				c.idleRSS, c.idleAnon = r.idleRSS, r.idleAnon
			}
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
