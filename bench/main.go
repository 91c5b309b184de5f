// Command bench is the mesh's load harness. In one run it measures, with
// fortio, a client pod talking to an echo server pod directly, through
// meshproxy, and through HAProxy and nginx in the same places, first at a
// fixed rate and then at the highest rate each setup sustains with every
// proxy confined to one core, and prints the figures as ratios to the
// direct path and to HAProxy. The pods are network namespaces and the
// proxies are reached through the rules of `meshproxy init`, so it must run
// as root. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/meshctl/mesh/internal/testenv"
)

type options struct {
	duration    time.Duration
	warmup      time.Duration
	rate        int
	connections int
	payload     int
	meshproxy   string
	keep        bool
	only        string
	rounds      int
	shape       string
	cpuProfile  string
}

// Load shapes: what each request is.
const (
	// shapeGet: GET /echo?size=N, the echo server answers N bytes.
	shapeGet = "get"
	// shapeEcho: POST /echo with an N-byte body, which comes back.
	shapeEcho = "echo"
)

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured phase")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured load before each phase")
	flag.IntVar(&o.rate, "rate", 1000, "requests per second of the fixed-rate phases")
	flag.IntVar(&o.connections, "connections", 16, "concurrent connections of the load generator")
	flag.IntVar(&o.payload, "payload", 1024, "response body size in bytes (with -shape echo also the request body, which the echo server returns)")
	flag.StringVar(&o.shape, "shape", shapeEcho, "load shape: get (GET, -payload bytes in the response) or echo (POST of -payload bytes, echoed back)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "directory to write CPU profiles of every meshproxy over the maximum-rate phases to (through its loopback admin API)")
	flag.StringVar(&o.meshproxy, "meshproxy", "", "meshproxy binary to measure (default: build ./cmd/meshproxy)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory with configurations and logs")
	flag.StringVar(&o.only, "only", "direct,meshproxy,haproxy,nginx", "comma-separated setups to measure besides direct (the baseline, always measured): meshproxy, haproxy, nginx, and the pairs with TLS between them meshproxy-mtls, haproxy-tls")
	flag.IntVar(&o.rounds, "rounds", 1, "times to run every phase; the report takes the median of the rounds")
	flag.Parse()
	if o.rounds < 1 || o.rate < 1 || o.connections < 1 || o.payload < 0 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "bench: -rounds, -rate and -connections must be positive, -duration too, -payload not negative")
		os.Exit(2)
	}
	if o.shape != shapeGet && o.shape != shapeEcho {
		fmt.Fprintf(os.Stderr, "bench: -shape is %s or %s, not %q\n", shapeGet, shapeEcho, o.shape)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: the pods are network namespaces with iptables rules (run: sudo go run ./bench)")
	}
	for _, tool := range []string{"ip", "iptables-restore", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install iproute2 iptables util-linux", tool)
		}
	}
	work, err := os.MkdirTemp("", "meshbench-")
	if err != nil {
		return err
	}
	// The proxies run as the mesh's proxy user and must reach their files.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "bench: work directory", work)
	} else {
		defer os.RemoveAll(work)
	}

	t := tools{workDir: work}
	fmt.Fprintln(os.Stderr, "bench: building", testenv.Fortio, "(cached after the first run)")
	if t.fortio, err = testenv.Fortio.Path(ctx); err != nil {
		return err
	}
	if t.meshproxy = o.meshproxy; t.meshproxy == "" {
		t.meshproxy = filepath.Join(work, "meshproxy")
		fmt.Fprintln(os.Stderr, "bench: building ./cmd/meshproxy")
		// As goreleaser builds it: most of an idle proxy's RSS is the
		// binary's own pages, so an unstripped build would overstate it.
		build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", t.meshproxy, "./cmd/meshproxy")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building meshproxy (run from the repository root): %w", err)
		}
	}

	// The direct path is the baseline of every added latency: always run.
	want := map[kind]bool{kindNone: true}
	for _, k := range strings.Split(o.only, ",") {
		switch k := kind(strings.TrimSpace(k)); k {
		case kindNone, kindMeshproxy, kindHAProxy, kindNginx, kindMeshproxyMTLS, kindHAProxyTLS:
			want[k] = true
		default:
			return fmt.Errorf("unknown setup %q in -only: use direct, meshproxy, haproxy, nginx, meshproxy-mtls, haproxy-tls", k)
		}
	}
	if want[kindHAProxy] || want[kindHAProxyTLS] {
		if t.haproxy, err = exec.LookPath("haproxy"); err != nil {
			fmt.Fprintln(os.Stderr, "bench: haproxy not found, skipping it: apt-get install haproxy")
			want[kindHAProxy], want[kindHAProxyTLS] = false, false
		}
	}
	if want[kindMeshproxyMTLS] || want[kindHAProxyTLS] {
		if t.ca, err = newCA(); err != nil {
			return err
		}
	}
	if o.cpuProfile != "" {
		if err := os.MkdirAll(o.cpuProfile, 0o755); err != nil {
			return err
		}
	}
	if want[kindNginx] {
		if t.nginx, err = exec.LookPath("nginx"); err != nil {
			fmt.Fprintln(os.Stderr, "bench: nginx not found, skipping it: apt-get install nginx-light")
			want[kindNginx] = false
		}
	}
	var setups []setup
	for _, pair := range []bool{false, true} {
		for _, k := range []kind{kindNone, kindMeshproxy, kindHAProxy, kindNginx, kindMeshproxyMTLS, kindHAProxyTLS} {
			if want[k] && !(pair && k == kindNone) && !(!pair && k.tls()) {
				setups = append(setups, setup{kind: k, pair: pair})
			}
		}
	}

	lastCPU := runtime.NumCPU() - 1
	var results []result
	// Rounds run every setup in turn rather than one setup many times, so
	// that a burst of load from elsewhere on the machine spreads over all
	// setups instead of landing on one.
	for round := 1; round <= o.rounds; round++ {
		for i, s := range setups {
			phases := []phase{{rate: o.rate}, {rate: 0}}
			if s.kind.tls() {
				phases = append(phases, phase{newConns: true})
			}
			for _, ph := range phases {
				subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 240, byte(i), 0}), 24)
				r, err := measure(ctx, o, t, s, ph, round, subnet, lastCPU)
				if err != nil {
					return fmt.Errorf("measuring %s: %w", s, err)
				}
				fmt.Fprintf(os.Stderr, "bench: round %d %-18s %-5s %8.0f req/s  p50 %.3f ms  p99 %.3f ms  cpu %.2f s\n", round, s, ph, r.qps, r.p50*1e3, r.p99*1e3, r.proxyCPU)
				results = append(results, r)
			}
		}
	}
	report(os.Stdout, o, combine(results))
	return nil
}
