// Package e2e holds the end-to-end data-plane tests: pods are network
// namespaces, each application runs behind `meshproxy init` rules and a
// `meshproxy run` sidecar, and the test watches requests arrive and the
// proxies count them. They need root and skip without it.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/testenv/netns"
	"github.com/meshctl/mesh/internal/wellknown"
)

// appUID is the applications' user: neither root nor the proxy's user, as in
// a real pod.
const appUID = 2711

// serviceVIP is the "ClusterIP" of the server's service: no interface owns
// it, so only the client pod's outbound interception can reach it.
var serviceVIP = netip.MustParseAddr("10.96.0.20")

// selfVIP is a service whose only endpoint is the client pod itself.
var selfVIP = netip.MustParseAddr("10.96.0.21")

// serviceVIP6 is the same service's IPv6 address, reachable through the
// ip6tables rules of `meshproxy init --ipv6`.
var serviceVIP6 = netip.MustParseAddr("fd96::20")

const (
	serviceLabel = "echo.e2e" // name.namespace, the proxy's metrics label
	selfLabel    = "self.e2e"
)

// mesh is the test's world: a client pod and a server pod, both meshed, and
// an unmeshed pod "other" behind a skipped CIDR.
type mesh struct {
	bin                   string // directory with meshproxy and the app binary
	client, server, other *netns.Pod
}

func setUp(t *testing.T) *mesh {
	t.Helper()
	netns.RequireRoot(t)
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("skipping: iptables is not installed (apt-get install iptables)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Binaries in a directory the application and proxy users can read
	// (go test's own work directory is private to root).
	bin, err := os.MkdirTemp("", "meshe2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, "meshproxy"), "github.com/meshctl/mesh/cmd/meshproxy")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building meshproxy: %v\n%s", err, out)
	}
	if err := copyFile(os.Args[0], filepath.Join(bin, "app")); err != nil {
		t.Fatal(err)
	}

	n := netns.New(t, "10.235.0.0/24")
	m := &mesh{bin: bin, client: n.MustAddPod(t, "client"), server: n.MustAddPod(t, "server"), other: n.MustAddPod(t, "other")}

	// The order of a real pod: the init step, then the sidecar, then the app.
	var ipv6 []string
	if m.client.Addr6.IsValid() {
		ipv6 = []string{"--ipv6"}
	}
	m.init(t, ctx, m.server, append(ipv6, "--skip-inbound-ports", strconv.Itoa(portSkipInbound))...)
	m.init(t, ctx, m.client, append(ipv6, "--skip-outbound-ports", strconv.Itoa(portSkipOutbound),
		"--skip-outbound-cidrs", m.other.Addr.String()+"/32")...)
	m.startProxy(t, m.server, map[string]any{
		"version":  "e2e-server",
		"workload": map[string]any{"name": "server", "namespace": "e2e"},
	})
	ports := []any{}
	for _, p := range []int{portHTTP, portTCP, portGRPC, portSkipInbound} {
		port := map[string]any{"port": p, "targetPort": p}
		if p == portHTTP {
			port = map[string]any{"port": 80, "targetPort": p}
		}
		ports = append(ports, port)
	}
	services := []any{map[string]any{
		"name": "echo", "namespace": "e2e",
		"addresses": []string{serviceVIP.String()},
		"ports":     ports,
		"endpoints": []any{map[string]any{"address": m.server.Addr.String()}},
	}, map[string]any{
		"name": "self", "namespace": "e2e",
		"addresses": []string{selfVIP.String()},
		"ports":     []any{map[string]any{"port": 80, "targetPort": portHTTP}},
		"endpoints": []any{map[string]any{"address": m.client.Addr.String()}},
	}}
	if len(ipv6) > 0 {
		services = append(services, map[string]any{
			"name": "echo6", "namespace": "e2e",
			"addresses": []string{serviceVIP6.String()},
			"ports":     []any{map[string]any{"port": 80, "targetPort": portHTTP}},
			"endpoints": []any{map[string]any{"address": m.server.Addr6.String()}},
		})
	}
	m.startProxy(t, m.client, map[string]any{
		"version":  "e2e-client",
		"workload": map[string]any{"name": "client", "namespace": "e2e"},
		"services": services,
	})
	for _, p := range []*netns.Pod{m.server, m.other, m.client} {
		m.start(t, p, "server", exec.Command(filepath.Join(bin, "app")), true)
		for _, port := range []int{portHTTP, portTCP, portGRPC, portSkipInbound, portSkipOutbound} {
			waitListening(t, p, port)
		}
	}
	return m
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

func (m *mesh) init(t *testing.T, ctx context.Context, p *netns.Pod, args ...string) {
	t.Helper()
	if out, err := p.Run(ctx, filepath.Join(m.bin, "meshproxy"), append([]string{"init"}, args...)...); err != nil {
		t.Fatalf("meshproxy init in %s: %v\n%s", p.Name, err, out)
	}
}

func (m *mesh) startProxy(t *testing.T, p *netns.Pod, conf map[string]any) {
	t.Helper()
	path := filepath.Join(m.bin, p.Name+".json")
	b, _ := json.Marshal(conf)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m.start(t, p, "meshproxy", exec.Command(filepath.Join(m.bin, "meshproxy"), "run", "--config", path, "--log-format", "text"), false)
	waitListening(t, p, wellknown.ProxyAdminPort)
	waitListening(t, p, wellknown.ProxyOutboundPort)
}

// start runs a long-lived process in p, as the app user when app is true and
// as the proxy user otherwise, and stops it when the test ends. Its output
// is logged on failure.
func (m *mesh) start(t *testing.T, p *netns.Pod, name string, cmd *exec.Cmd, app bool) {
	t.Helper()
	uid := uint32(wellknown.ProxyUID)
	if app {
		uid = appUID
		cmd.Env = append(os.Environ(), appEnv+"=server", podEnv+"="+p.Name)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var out testenv.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := p.Start(cmd); err != nil {
		t.Fatalf("starting %s in %s: %v", name, p.Name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("output of %s in %s:\n%s", name, p.Name, out.String())
		}
	})
}

// waitListening waits for a listener on 127.0.0.1:port in p; loopback is
// never intercepted, so the dial reaches the listener itself.
func waitListening(t *testing.T, p *netns.Pod, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := p.Do(func() error {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on port %d in %s: %v", port, p.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call runs one request from the client pod's application (a separate
// process as the app user) and returns its output.
func (m *mesh) call(t *testing.T, kind string, dst netip.AddrPort) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*appTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(m.bin, "app"), dst.String())
	cmd.Env = append(os.Environ(), appEnv+"="+kind)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appUID}}
	var out testenv.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := m.client.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s to %s from the client app: %v\n%s", kind, dst, err, out.String())
	}
	return out.String()
}

// counters are the sums the test compares, read from a proxy's /metrics.
type counters struct {
	requests    map[string]float64 // meshproxy_requests_total by "direction/service"
	connections map[string]float64 // meshproxy_tcp_connections_opened_total, same key
}

func (c counters) total(direction string) float64 {
	sum := 0.0
	for k, v := range c.requests {
		if strings.HasPrefix(k, direction+"/") {
			sum += v
		}
	}
	for k, v := range c.connections {
		if strings.HasPrefix(k, direction+"/") {
			sum += v
		}
	}
	return sum
}

// scrape reads the proxy's /metrics from inside its pod, over loopback as
// an operator's port-forward would.
func scrape(t *testing.T, p *netns.Pod) counters {
	t.Helper()
	c := counters{requests: map[string]float64{}, connections: map[string]float64{}}
	var body string
	// The request is written by hand on a connection dialled inside the pod:
	// http.Transport would dial from a goroutine of its own, outside it.
	err := p.Do(func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", wellknown.ProxyAdminPort), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		req, _ := http.NewRequest(http.MethodGet, "http://localhost/metrics", nil)
		req.Close = true
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	if err != nil {
		t.Fatalf("scraping the proxy in %s: %v", p.Name, err)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, "{")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		key := label(labels, "direction") + "/" + label(labels, "service")
		switch name {
		case "meshproxy_requests_total":
			c.requests[key] += v
		case "meshproxy_tcp_connections_opened_total":
			c.connections[key] += v
		}
	}
	return c
}

func label(labels, name string) string {
	_, after, ok := strings.Cut(labels, name+"=\"")
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, "\"")
	return v
}

// eventually polls a proxy until check passes: a request is counted when its
// response ends, which the client may see a moment before the proxy does.
func eventually(t *testing.T, p *netns.Pod, what string, check func(counters) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c := scrape(t, p)
		if check(c) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: not seen in the %s proxy's metrics; requests %v, connections %v", what, p.Name, c.requests, c.connections)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTransparentMesh(t *testing.T) {
	m := setUp(t)
	vip := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(serviceVIP, port) }
	at := func(p *netns.Pod, port int) netip.AddrPort { return netip.AddrPortFrom(p.Addr, uint16(port)) }

	// Through both proxies: the client proxy counts the request against the
	// service, the server proxy against its workload.
	through := []struct {
		name, kind string
		dst        netip.AddrPort
		want       string
		byRequest  bool // counted as a request; else as a TCP connection
	}{
		{"HTTP/1.1", "http1", vip(80), "status=200 client-proto=HTTP/1.1 " + helloPrefix, true},
		{"h2c", "h2c", vip(80), "status=200 client-proto=HTTP/2.0 " + helloPrefix, true},
		{"gRPC", "grpc", vip(portGRPC), grpcServingMessage, true},
		{"plain TCP", "tcp", vip(portTCP), tcpEchoPrefix + "ping", false},
		{"HTTP/1.1 over IPv6", "http1", netip.AddrPortFrom(serviceVIP6, 80), "status=200 client-proto=HTTP/1.1 " + helloPrefix, true},
	}
	for _, c := range through {
		t.Run(c.name, func(t *testing.T) {
			svc := "outbound/" + serviceLabel
			if c.dst.Addr() == serviceVIP6 {
				if !m.client.Addr6.IsValid() {
					t.Skip("skipping: the kernel has no IPv6")
				}
				svc = "outbound/echo6.e2e"
			}
			pick := func(x counters, key string) float64 {
				if c.byRequest {
					return x.requests[key]
				}
				return x.connections[key]
			}
			cb, sb := scrape(t, m.client), scrape(t, m.server)
			if out := m.call(t, c.kind, c.dst); !contains(out, c.want) {
				t.Fatalf("got %q, want %q", out, c.want)
			}
			eventually(t, m.client, "outbound "+c.name, func(x counters) bool {
				return pick(x, svc) >= pick(cb, svc)+1
			})
			eventually(t, m.server, "inbound "+c.name, func(x counters) bool {
				return pick(x, "inbound/server") >= pick(sb, "inbound/server")+1
			})
		})
	}

	// A destination the client proxy does not know is passed through to the
	// original address, and the server proxy still sees it arrive.
	t.Run("unknown destination passes through", func(t *testing.T) {
		cb, sb := scrape(t, m.client), scrape(t, m.server)
		if out := m.call(t, "http1", at(m.server, portHTTP)); !contains(out, "status=200") {
			t.Fatalf("got %q", out)
		}
		eventually(t, m.client, "outbound to an unknown destination", func(x counters) bool {
			return x.requests["outbound/unknown"]+x.connections["outbound/unknown"] > cb.requests["outbound/unknown"]+cb.connections["outbound/unknown"]
		})
		eventually(t, m.server, "inbound from an unknown destination", func(x counters) bool {
			return x.requests["inbound/server"] > sb.requests["inbound/server"]
		})
	})

	// Excluded traffic still works, directly, and the proxy it skips counts
	// nothing. The quiet period gives a late count time to show up.
	unchanged := func(t *testing.T, p *netns.Pod, direction string, before counters) {
		t.Helper()
		time.Sleep(300 * time.Millisecond)
		if after := scrape(t, p); after.total(direction) != before.total(direction) {
			t.Errorf("the %s proxy counted %s traffic that should have skipped it: before %v %v, after %v %v",
				p.Name, direction, before.requests, before.connections, after.requests, after.connections)
		}
	}
	t.Run("skip-outbound-ports", func(t *testing.T) {
		cb, sb := scrape(t, m.client), scrape(t, m.server)
		if out := m.call(t, "http1", at(m.server, portSkipOutbound)); !contains(out, "status=200") {
			t.Fatalf("got %q", out)
		}
		unchanged(t, m.client, "outbound", cb)
		// The server's inbound rules do not skip this port.
		eventually(t, m.server, "inbound on a port only the client skips", func(x counters) bool {
			return x.total("inbound") > sb.total("inbound")
		})
	})
	t.Run("skip-inbound-ports", func(t *testing.T) {
		cb, sb := scrape(t, m.client), scrape(t, m.server)
		if out := m.call(t, "http1", vip(portSkipInbound)); !contains(out, "status=200") {
			t.Fatalf("got %q", out)
		}
		eventually(t, m.client, "outbound to a port the server skips", func(x counters) bool {
			return x.requests["outbound/"+serviceLabel] > cb.requests["outbound/"+serviceLabel]
		})
		unchanged(t, m.server, "inbound", sb)
	})
	// docs/interception.md: a pod calling its own pod IP skips its proxy (lo),
	// and a pod calling a service whose endpoint is itself passes the
	// outbound listener only: the proxy's dial to the pod IP is exempt.
	t.Run("pod calls itself", func(t *testing.T) {
		cb := scrape(t, m.client)
		if out := m.call(t, "http1", at(m.client, portHTTP)); !contains(out, "status=200") {
			t.Fatalf("got %q", out)
		}
		unchanged(t, m.client, "outbound", cb)
		if after := scrape(t, m.client); after.total("inbound") != cb.total("inbound") {
			t.Errorf("a call to the pod's own IP passed the inbound listener")
		}

		cb = scrape(t, m.client)
		if out := m.call(t, "http1", netip.AddrPortFrom(selfVIP, 80)); !contains(out, "status=200") {
			t.Fatalf("got %q", out)
		}
		eventually(t, m.client, "outbound to a service on the pod itself", func(x counters) bool {
			return x.requests["outbound/"+selfLabel] > cb.requests["outbound/"+selfLabel]
		})
		unchanged(t, m.client, "inbound", cb)
	})
	t.Run("skip-outbound-cidrs", func(t *testing.T) {
		cb := scrape(t, m.client)
		if out := m.call(t, "http1", at(m.other, portHTTP)); !contains(out, "status=200") {
			t.Fatalf("got %q", out)
		}
		if out := m.call(t, "tcp", at(m.other, portTCP)); !contains(out, tcpEchoPrefix+"ping") {
			t.Fatalf("got %q", out)
		}
		unchanged(t, m.client, "outbound", cb)
	})
}
