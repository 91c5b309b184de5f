package push

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
)

// swarm is BenchmarkPush's simulated proxies: each connects with its own
// certificate, subscribes to the hot service and its others, and ACKs
// what it applies. done hears each generation of the hot service once
// every proxy has applied it.
type swarm struct {
	hotKey  string
	done    func(gen int)
	proxies []*proxy
	seen    []atomic.Int64 // per proxy: the newest generation applied

	mu     sync.Mutex
	counts map[int]int // generation -> proxies that applied it
}

func startSwarm(tb testing.TB, ca *testCA, url, ns, hotKey string, subs [][]string, done func(int)) (*swarm, error) {
	w := &swarm{hotKey: hotKey, done: done, seen: make([]atomic.Int64, len(subs)), counts: map[int]int{}}
	for i := range subs {
		p, err := dialProxy(ca.client(tb, fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/proxy-%d", ns, i)), url, fmt.Sprint("proxy-", i), func(p *proxy) {
			p.OnAck = func(m *meshapi.ServerMessage) {
				if m.Kind != meshapi.KindEndpoints || m.Name != hotKey {
					return
				}
				p.mu.Lock()
				gen := zoneGen(p.set, hotKey)
				p.msgs = p.msgs[:0] // keep the proxy's memory flat
				p.mu.Unlock()
				w.applied(i, gen)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("proxy %d: %w", i, err)
		}
		if err := p.subscribe(subs[i], nil); err != nil {
			return nil, err
		}
		w.proxies = append(w.proxies, p)
	}
	for _, p := range w.proxies {
		if err := p.wait(5*time.Minute, "the hot service", func(set *meshapi.Set, _ []*meshapi.ServerMessage) bool {
			return zoneGen(set, hotKey) >= 0
		}); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// applied records that proxy idx holds generation gen, and with it every
// generation it skipped.
func (w *swarm) applied(idx, gen int) {
	old := int(w.seen[idx].Load())
	for gen > old && !w.seen[idx].CompareAndSwap(int64(old), int64(gen)) {
		old = int(w.seen[idx].Load())
	}
	if gen <= old {
		return
	}
	w.mu.Lock()
	var complete []int
	for g := old + 1; g <= gen; g++ {
		if w.counts[g]++; w.counts[g] == len(w.proxies) {
			delete(w.counts, g)
			complete = append(complete, g)
		}
	}
	w.mu.Unlock()
	for _, g := range complete {
		w.done(g)
	}
}

// clientsEnv names the file with the child process's clientsSpec.
const clientsEnv = "MESHCTL_PUSH_BENCH_CLIENTS"

// clientsSpec is what the child process needs to run the swarm: the
// server, the test CA (to make the proxies' certificates), and each
// proxy's subscriptions.
type clientsSpec struct {
	URL, Namespace, HotKey                  string
	AnchorsPEM, IssuerCertPEM, IssuerKeyPEM []byte
	Subs                                    [][]string
}

// clientsStdin is the child process's standard input.
var clientsStdin io.WriteCloser

// startClientsProcess runs the swarm in a child process, the test binary
// again (TestPushBenchClients), and calls done for each generation the
// child reports. The child ends when this process does: it reads its
// standard input until EOF.
func startClientsProcess(ca *testCA, url, ns, hotKey string, subs [][]string, done func(int)) error {
	spec, err := json.Marshal(clientsSpec{URL: url, Namespace: ns, HotKey: hotKey, Subs: subs,
		AnchorsPEM: ca.ca.TrustAnchorsPEM, IssuerCertPEM: ca.ca.IssuerCertPEM, IssuerKeyPEM: ca.ca.IssuerKeyPEM})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", "push-bench-clients-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(spec); err != nil {
		return err
	}
	f.Close()
	args := []string{os.Args[0], "-test.run=^TestPushBenchClients$", "-test.timeout=0"}
	if *benchClientsCPUs != "" {
		args = append([]string{"taskset", "-c", *benchClientsCPUs}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), clientsEnv+"="+f.Name())
	cmd.Stderr = os.Stderr
	// Held open, and referenced, for the life of this process: its close
	// is what ends the child.
	clientsStdin, err = cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "push-bench: ")
			if !ok {
				continue
			}
			switch {
			case line == "ready":
				ready <- nil
			case strings.HasPrefix(line, "failed: "):
				ready <- fmt.Errorf("the clients' process: %s", line)
			default:
				if gen, err := strconv.Atoi(strings.TrimPrefix(line, "applied ")); err == nil {
					done(gen)
				}
			}
		}
		ready <- fmt.Errorf("the clients' process ended: %v", cmd.Wait())
	}()
	select {
	case err := <-ready:
		return err
	case <-time.After(10 * time.Minute):
		cmd.Process.Kill()
		return fmt.Errorf("the clients' process was not ready in 10 minutes")
	}
}

// TestPushBenchClients is BenchmarkPush's swarm in its own process
// (-push.clients-process); run any other way it skips.
func TestPushBenchClients(t *testing.T) {
	path := os.Getenv(clientsEnv)
	if path == "" {
		t.Skip("the child process of BenchmarkPush -push.clients-process")
	}
	fail := func(err error) {
		fmt.Printf("push-bench: failed: %v\n", err)
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	var spec clientsSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		fail(err)
	}
	id, err := pki.LoadIdentity(spec.AnchorsPEM, spec.IssuerCertPEM, spec.IssuerKeyPEM, time.Now())
	if err != nil {
		fail(err)
	}
	ca := newTestCAFrom(id)
	var out sync.Mutex
	if _, err := startSwarm(t, ca, spec.URL, spec.Namespace, spec.HotKey, spec.Subs, func(gen int) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf("push-bench: applied %d\n", gen)
	}); err != nil {
		fail(err)
	}
	fmt.Println("push-bench: ready")
	io.Copy(io.Discard, os.Stdin) // until the benchmark's process ends
}
