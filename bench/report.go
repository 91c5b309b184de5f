package main

import (
	"fmt"
	"io"
	"runtime"
	"time"
)

// report prints the results as Markdown tables, ready for
// docs/benchmarks.md: absolute figures first, then the ratios the targets are
// stated in.
func report(w io.Writer, o options, results []result) {
	fixed := map[string]result{}
	maxed := map[string]result{}
	conns := map[string]result{}
	var order []string
	for _, r := range results {
		name := r.setup.String()
		switch {
		case r.newConns:
			conns[name] = r
		case r.rate == 0:
			maxed[name] = r
		default:
			fixed[name] = r
			order = append(order, name)
		}
	}
	direct := fixed["direct"]

	load := fmt.Sprintf("GET of %d-byte responses", o.payload)
	if o.shape == shapeEcho {
		load = fmt.Sprintf("%d-byte echo (POST)", o.payload)
	}
	fmt.Fprintf(w, "Run of %s on %d CPUs (%s/%s): fortio, %d keep-alive connections, %s, %s per phase after %s of warm-up, %d round(s), median of rounds.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, o.connections, load, o.duration, o.warmup, o.rounds)

	fmt.Fprintf(w, "### Fixed rate: %d req/s\n\n", o.rate)
	fmt.Fprintln(w, "| setup | req/s | p50 ms | p90 ms | p99 ms | added p50 ms | added p90 ms | added p99 ms | proxy CPU s per 1000 req | idle RSS MB (anon) | peak RSS MB | failed |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, name := range order {
		r := fixed[name]
		fmt.Fprintf(w, "| %s | %.0f | %.3f | %.3f | %.3f | %s | %s | %s | %s | %s | %s | %d |\n", name, r.qps,
			ms(r.p50), ms(r.p90), ms(r.p99),
			added(r, direct, r.p50, direct.p50), added(r, direct, r.p90, direct.p90), added(r, direct, r.p99, direct.p99),
			perThousand(r), idleMB(r), mb(r, r.peakRSS), r.failed)
	}

	fmt.Fprint(w, "\n### Maximum rate, each proxy on one core\n\n")
	fmt.Fprintln(w, "| setup | req/s | p50 ms | p99 ms | proxy cores busy | req/s per proxy core | failed |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, name := range order {
		r := maxed[name]
		fmt.Fprintf(w, "| %s | %.0f | %.3f | %.3f | %s | %s | %d |\n", name, r.qps, ms(r.p50), ms(r.p99), coresBusy(r, o.duration), perCore(r), r.failed)
	}

	if len(conns) > 0 {
		fmt.Fprint(w, "\n### New connections, keep-alive off, maximum rate\n\n")
		fmt.Fprint(w, "Every request on a new connection; the proxies forward TCP, so each is one new TLS connection between them.\n\n")
		fmt.Fprintln(w, "| setup | connections/s | p50 ms | p99 ms | proxy cores busy | connections/s per proxy core | failed |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
		for _, name := range order {
			if r, ok := conns[name]; ok {
				fmt.Fprintf(w, "| %s | %.0f | %.3f | %.3f | %s | %s | %d |\n", name, r.qps, ms(r.p50), ms(r.p99), coresBusy(r, o.duration), perCore(r), r.failed)
			}
		}
	}

	fmt.Fprint(w, "\n### Ratios\n\n")
	fmt.Fprint(w, "Added latency is the setup's percentile minus the direct path's at the fixed rate. Lower is better except for req/s per core.\n\n")
	fmt.Fprintln(w, "| comparison | added p50 | added p99 | req/s per proxy core | CPU per 1000 req | peak RSS at fixed rate |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, pair := range [][2]string{
		{"meshproxy x1", "haproxy x1"}, {"meshproxy x1", "nginx x1"},
		{"meshproxy x2", "haproxy x2"}, {"meshproxy x2", "nginx x2"},
		{"meshproxy-mtls x2", "haproxy-tls x2"},
	} {
		a, okA := fixed[pair[0]]
		b, okB := fixed[pair[1]]
		if !okA || !okB {
			continue
		}
		fmt.Fprintf(w, "| %s / %s | %s | %s | %s | %s | %s |\n", pair[0], pair[1],
			ratio(a.p50-direct.p50, b.p50-direct.p50), ratio(a.p99-direct.p99, b.p99-direct.p99),
			ratio(reqPerCore(maxed[pair[0]]), reqPerCore(maxed[pair[1]])),
			ratio(cpuPerThousand(a), cpuPerThousand(b)), ratio(float64(a.peakRSS), float64(b.peakRSS)))
	}
	if a, ok := conns["meshproxy-mtls x2"]; ok {
		if b, ok := conns["haproxy-tls x2"]; ok {
			fmt.Fprintf(w, "| meshproxy-mtls x2 / haproxy-tls x2, new connections | | | %s (connections/s per core) | | |\n", ratio(reqPerCore(a), reqPerCore(b)))
		}
	}
	for _, name := range []string{"meshproxy x1", "meshproxy x2", "meshproxy-mtls x2"} {
		a, ok := fixed[name]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "| %s / direct (total latency, req/s) | %s | %s | %s | | |\n", name,
			ratio(a.p50, direct.p50), ratio(a.p99, direct.p99), ratio(maxed[name].qps, maxed["direct"].qps))
	}

	var targets []string
	check := func(what string, ok bool, detail string) {
		mark := "met"
		if !ok {
			mark = "NOT met"
		}
		targets = append(targets, fmt.Sprintf("- %s: %s (%s)\n", what, mark, detail))
	}
	latency := func(what string, m, h float64) {
		if h <= 0 {
			targets = append(targets, fmt.Sprintf("- %s: inconclusive (HAProxy's added latency %.3f ms is within the noise of this run; rerun with more -rounds on a quieter machine)\n", what, ms(h)))
			return
		}
		check(what, m <= h, fmt.Sprintf("%.3f ms vs %.3f ms", ms(m), ms(h)))
	}
	for _, c := range []struct{ mesh, peer, what string }{
		{"meshproxy x1", "haproxy x1", "one meshproxy"},
		{"meshproxy-mtls x2", "haproxy-tls x2", "a meshproxy pair with mTLS"},
	} {
		m, okM := fixed[c.mesh]
		h, okH := fixed[c.peer]
		if !okM || !okH {
			continue
		}
		latency("added p50 of "+c.what+" <= HAProxy's", m.p50-direct.p50, h.p50-direct.p50)
		latency("added p99 of "+c.what+" <= HAProxy's", m.p99-direct.p99, h.p99-direct.p99)
		mc, hc := reqPerCore(maxed[c.mesh]), reqPerCore(maxed[c.peer])
		check("req/s per proxy core of "+c.what+" >= HAProxy's", hc > 0 && mc >= hc, fmt.Sprintf("%.0f vs %.0f", mc, hc))
	}
	if m, ok := fixed["meshproxy x1"]; ok {
		check(fmt.Sprintf("peak RSS at %d req/s < 20 MB", o.rate), m.peakRSS < 20<<20, fmt.Sprintf("%.1f MB", float64(m.peakRSS)/(1<<20)))
	}
	if m, ok := fixed["meshproxy-mtls x2"]; ok {
		check("idle RSS with mTLS <= 10 MB", m.idleRSS <= 10e6, mib(m.idleRSS)+fmt.Sprintf(", of which anonymous %.1f MiB", float64(m.idleAnon)/(1<<20)))
		check(fmt.Sprintf("peak RSS at %d req/s with mTLS <= 20 MB", o.rate), m.peakRSS <= 20e6, mib(m.peakRSS))
	}
	if len(targets) > 0 {
		fmt.Fprint(w, "\n### Targets\n\n")
		for _, t := range targets {
			fmt.Fprint(w, t)
		}
	}
}

// mib names a memory figure in both units, since the goals say MB and
// /proc counts KiB.
func mib(b int64) string {
	return fmt.Sprintf("%.1f MiB = %.1f MB", float64(b)/(1<<20), float64(b)/1e6)
}

// idleMB is the idle RSS and, in brackets, its anonymous part: the rest
// is the binary's file pages, which every pod running the same image on a
// node shares through the page cache.
func idleMB(r result) string {
	if r.setup.proxies() == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f (%.1f)", float64(r.idleRSS)/(1<<20), float64(r.idleAnon)/(1<<20))
}

func ms(s float64) float64 { return s * 1e3 }

func added(r, direct result, v, base float64) string {
	if r.setup.kind == kindNone {
		return "-"
	}
	return fmt.Sprintf("%.3f", ms(v-base))
}

func cpuPerThousand(r result) float64 {
	if r.requests == 0 {
		return 0
	}
	return r.proxyCPU / float64(r.requests) * 1000
}

func perThousand(r result) string {
	if r.setup.proxies() == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f", cpuPerThousand(r))
}

// mb is a memory figure in MiB (the "MB" of the tables, as in VmRSS's kB).
func mb(r result, bytes int64) string {
	if r.setup.proxies() == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(bytes)/(1<<20))
}

// reqPerCore is how many requests one proxy core completes per second of
// its CPU time: each request passes every proxy of the setup, so the
// requests count once per proxy against their summed CPU time. Unlike the
// achieved rate it does not depend on whether the proxy or the load
// generator was the bottleneck.
func reqPerCore(r result) float64 {
	if r.proxyCPU == 0 {
		return 0
	}
	return float64(r.requests) * float64(r.setup.proxies()) / r.proxyCPU
}

func perCore(r result) string {
	if r.setup.proxies() == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", reqPerCore(r))
}

func coresBusy(r result, d time.Duration) string {
	if r.setup.proxies() == 0 || r.rounds == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.proxyCPU/float64(r.rounds)/d.Seconds())
}

// ratio is a/b, or "n/a" when b is not positive: an added latency at or
// below zero means the baseline was within the noise, and dividing by it
// would give a number that means nothing.
func ratio(a, b float64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}
