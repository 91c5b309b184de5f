package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/testenv/netns"
	"github.com/meshctl/mesh/internal/wellknown"
)

// The service address the client dials in every proxied setup. No interface
// owns it: only the client pod's interception rules make it reachable, as a
// ClusterIP is in a meshed pod.
var serviceVIP = netip.MustParseAddr("10.96.0.80")

const (
	servicePort = 80
	appPort     = 8080
)

// kind is the proxy a setup runs.
type kind string

const (
	kindNone      kind = "direct"
	kindMeshproxy kind = "meshproxy"
	kindHAProxy   kind = "haproxy"
	kindNginx     kind = "nginx"
	// The mTLS setups exist only as pairs: TLS 1.3 with client
	// certificates, verified, between the client pod's proxy and the
	// server pod's (see mtls.go).
	kindMeshproxyMTLS kind = "meshproxy-mtls"
	kindHAProxyTLS    kind = "haproxy-tls"
)

// tls reports whether the setup's proxies speak TLS to each other.
func (k kind) tls() bool { return k == kindMeshproxyMTLS || k == kindHAProxyTLS }

// program is the proxy program a kind runs.
func (k kind) program() kind {
	switch k {
	case kindMeshproxyMTLS:
		return kindMeshproxy
	case kindHAProxyTLS:
		return kindHAProxy
	}
	return k
}

// setup is one topology: which proxy, and whether only the client pod has one
// or both pods do.
type setup struct {
	kind kind
	pair bool
}

func (s setup) String() string {
	switch {
	case s.kind == kindNone:
		return "direct"
	case s.pair:
		return string(s.kind) + " x2"
	}
	return string(s.kind) + " x1"
}

func (s setup) proxies() int {
	switch {
	case s.kind == kindNone:
		return 0
	case s.pair:
		return 2
	}
	return 1
}

// tools are the binaries a run uses.
type tools struct {
	fortio, meshproxy, haproxy, nginx string
	workDir                           string              // readable by the proxy's user
	ca                                *pki.IdentityBundle // the mTLS setups' CA
}

// env is one setup brought up: two pods, the echo server, the proxies.
type env struct {
	net            *netns.Network
	client, server *netns.Pod
	procs          []*exec.Cmd
	proxyPIDs      []int
	meshproxies    []*netns.Pod // pods whose proxy is a meshproxy, for profiles
	controllers    []*meshController
	target         string // the URL the load generator requests
}

func (e *env) close() {
	for _, p := range e.procs {
		if p.Process != nil {
			p.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range e.procs {
		if p.Process == nil {
			continue
		}
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	for _, c := range e.controllers {
		c.close()
	}
	if e.net != nil {
		if err := e.net.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: removing namespaces:", err)
		}
	}
}

// start brings up a setup. Proxies run as the mesh's proxy user, pinned to
// one core each (the client's to cpu 0, the server's to the last cpu); the
// load generator and the echo server are not pinned.
func start(ctx context.Context, o options, t tools, s setup, ph phase, subnet netip.Prefix, lastCPU int) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.net, err = netns.NewNetwork(ctx, subnet); err != nil {
		return nil, err
	}
	if e.client, err = e.net.AddPod(ctx, "client"); err != nil {
		return nil, err
	}
	if e.server, err = e.net.AddPod(ctx, "server"); err != nil {
		return nil, err
	}
	logs := filepath.Join(t.workDir, "logs")
	if err := os.MkdirAll(logs, 0o777); err != nil {
		return nil, err
	}

	echo := exec.CommandContext(ctx, t.fortio, "server", "-http-port", fmt.Sprintf(":%d", appPort),
		"-grpc-port", "disabled", "-redirect-port", "disabled", "-tcp-port", "disabled", "-udp-port", "disabled", "-loglevel", "warning")
	if err := e.run(e.server, echo, logs, "echo", false, -1); err != nil {
		return nil, err
	}
	if err := waitListening(ctx, e.server, appPort); err != nil {
		return nil, err
	}

	path := "/echo"
	if o.shape == shapeGet {
		path = fmt.Sprintf("/echo?size=%d", o.payload)
	}
	if s.kind == kindNone {
		e.target = fmt.Sprintf("http://%s:%d%s", e.server.Addr, appPort, path)
		return e, nil
	}
	e.target = fmt.Sprintf("http://%s:%d%s", serviceVIP, servicePort, path)
	if ph.newConns {
		// Many short connections: let the pods reuse ports in TIME_WAIT
		// and use the whole ephemeral range, so that a 10 s phase at
		// thousands of connections per second does not run out of ports.
		for _, p := range []*netns.Pod{e.client, e.server} {
			if _, err := p.Run(ctx, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"); err != nil {
				return nil, fmt.Errorf("setting sysctls in pod %s: %w", p.Name, err)
			}
		}
	}
	// Interception is the same for every proxy: the client pod's outbound
	// rules, and with a pair the server pod's inbound rules, send the
	// connections to the proxy's ports; the proxy user is exempt.
	if err := e.init(ctx, t, e.client); err != nil {
		return nil, err
	}
	if s.pair {
		if err := e.init(ctx, t, e.server); err != nil {
			return nil, err
		}
	}
	// The server's proxy first, so that the client's finds it ready.
	if s.pair {
		if err := e.startProxy(ctx, t, s.kind, ph, e.server, "server", lastCPU, logs); err != nil {
			return nil, err
		}
	}
	if err := e.startProxy(ctx, t, s.kind, ph, e.client, "client", 0, logs); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *env) init(ctx context.Context, t tools, p *netns.Pod) error {
	if _, err := p.Run(ctx, t.meshproxy, "init"); err != nil {
		return fmt.Errorf("installing interception rules: %w", err)
	}
	return nil
}

// run starts cmd in pod with output to a log file, as the proxy user when
// asProxy, pinned to cpu when cpu >= 0.
func (e *env) run(p *netns.Pod, cmd *exec.Cmd, logs, name string, asProxy bool, cpu int) error {
	if cpu >= 0 {
		cmd.Args = append([]string{"taskset", "-c", strconv.Itoa(cpu)}, cmd.Args...)
		path, err := exec.LookPath("taskset")
		if err != nil {
			return fmt.Errorf("finding taskset (apt-get install util-linux): %w", err)
		}
		cmd.Path = path
	}
	if asProxy {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: wellknown.ProxyUID, Gid: wellknown.ProxyUID}}
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	}
	f, err := os.Create(filepath.Join(logs, p.Name+"-"+name+".log"))
	if err != nil {
		return err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := p.Start(cmd); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	e.procs = append(e.procs, cmd)
	return nil
}

// startProxy starts one proxy of kind k in pod p. The client-side proxy
// listens on the outbound port and sends everything to the server pod's app
// port; the server-side one listens on the inbound port and sends to the app.
// meshproxy gets the same through its configuration, or in the mTLS setup
// from its controller: a service on the VIP whose endpoint is the server
// pod.
func (e *env) startProxy(ctx context.Context, t tools, k kind, ph phase, p *netns.Pod, side string, cpu int, logs string) error {
	dir := filepath.Join(t.workDir, p.Name+"-"+string(k))
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if err := os.Chown(dir, wellknown.ProxyUID, wellknown.ProxyUID); err != nil {
		return err
	}
	listen, upstream := wellknown.ProxyOutboundPort, netip.AddrPortFrom(e.server.Addr, appPort)
	if side == "server" {
		listen, upstream = wellknown.ProxyInboundPort, netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", appPort))
	}
	var cmd *exec.Cmd
	switch k {
	case kindMeshproxy:
		conf := filepath.Join(dir, "meshproxy.json")
		if err := writeJSON(conf, meshproxyConfig(side, e.server.Addr, nil)); err != nil {
			return err
		}
		cmd = exec.CommandContext(ctx, t.meshproxy, "run", "--config", conf)
	case kindMeshproxyMTLS:
		id, proto := clientID, meshapi.ProtocolDetect
		if side == "server" {
			id = serverID
		}
		if ph.newConns {
			// One TLS connection between the proxies per client
			// connection: TCP forwarding, which pools nothing.
			proto = meshapi.ProtocolOpaque
		}
		ctl, err := startController(p, t.ca, dir, id, side == "client", e.server.Addr, proto)
		if err != nil {
			return err
		}
		e.controllers = append(e.controllers, ctl)
		boot := ctl.ctl.Bootstrap()
		conf := filepath.Join(dir, "meshproxy.json")
		if err := writeJSON(conf, meshproxyConfig(side, e.server.Addr, &boot)); err != nil {
			return err
		}
		cmd = exec.CommandContext(ctx, t.meshproxy, "run", "--config", conf, "--pod-namespace", "bench", "--service-account", side)
	case kindHAProxy, kindHAProxyTLS:
		var tlsFiles *haproxyTLS
		if k == kindHAProxyTLS {
			id := clientID
			if side == "server" {
				id = serverID
			}
			crt, ca, err := haproxyCerts(t.ca, dir, id)
			if err != nil {
				return err
			}
			tlsFiles = &haproxyTLS{crt: crt, ca: ca, tcp: ph.newConns}
		}
		conf := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(conf, []byte(haproxyConfig(listen, upstream, side, tlsFiles)), 0o644); err != nil {
			return err
		}
		cmd = exec.CommandContext(ctx, t.haproxy, "-db", "-f", conf)
	case kindNginx:
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConfig(dir, listen, upstream)), 0o644); err != nil {
			return err
		}
		cmd = exec.CommandContext(ctx, t.nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
	}
	if err := e.run(p, cmd, logs, string(k), true, cpu); err != nil {
		return err
	}
	e.proxyPIDs = append(e.proxyPIDs, cmd.Process.Pid)
	if err := waitListening(ctx, p, listen); err != nil {
		return err
	}
	if k.program() == kindMeshproxy {
		e.meshproxies = append(e.meshproxies, p)
		// /ready answers 200 once the configuration is loaded and, with a
		// controller, a certificate and the mesh settings are held.
		return waitReady(ctx, p)
	}
	return nil
}

func meshproxyConfig(side string, server netip.Addr, controller *meshapi.Bootstrap) map[string]any {
	c := map[string]any{
		"version":  "bench-" + side,
		"workload": map[string]any{"name": "bench-" + side, "namespace": "bench"},
	}
	if controller != nil {
		// Services, endpoints and their identities come from discovery.
		c["controller"] = controller
		return c
	}
	if side == "client" {
		c["services"] = []any{map[string]any{
			"name":      "echo",
			"namespace": "bench",
			"addresses": []string{serviceVIP.String()},
			"ports":     []any{map[string]any{"port": servicePort, "targetPort": appPort}},
			"endpoints": []any{map[string]any{"address": server.String()}},
		}}
	}
	return c
}

// haproxyTLS are the files and mode of HAProxy in the mTLS setup.
type haproxyTLS struct {
	crt, ca string
	tcp     bool // mode tcp: one TLS connection per client connection
}

// haproxyConfig is an HTTP-mode proxy with connection reuse to the upstream,
// which is what meshproxy does for HTTP/1. With tls, the client side
// originates TLS 1.3 to the server pod with its certificate and verifies
// the server's chain, and the server side terminates TLS 1.3 and requires
// and verifies the client's certificate: what mesh TLS does, except that
// HAProxy checks the chain and not the SPIFFE id in it.
func haproxyConfig(listen int, upstream netip.AddrPort, side string, tls *haproxyTLS) string {
	mode, bindTLS, serverTLS := "http", "", ""
	if tls != nil {
		if tls.tcp {
			mode = "tcp"
		}
		if side == "server" {
			bindTLS = fmt.Sprintf(" ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3", tls.crt, tls.ca)
		} else {
			serverTLS = fmt.Sprintf(" ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3", tls.crt, tls.ca)
		}
	}
	reuse := "    http-reuse always\n"
	if mode == "tcp" {
		reuse = ""
	}
	return fmt.Sprintf(`global
    nbthread 1
    maxconn 4096
defaults
    mode %s
    timeout connect 5s
    timeout client 60s
    timeout server 60s
%sfrontend in
    bind :%d%s
    default_backend app
backend app
    server app %s%s
`, mode, reuse, listen, bindTLS, upstream, serverTLS)
}

// nginxConfig is one worker proxying HTTP/1.1 with upstream keep-alive. It
// runs unprivileged, so every path it writes is under dir.
func nginxConfig(dir string, listen int, upstream netip.AddrPort) string {
	return fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream app {
        server %[3]s;
        keepalive 64;
    }
    server {
        listen %[2]d;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, dir, listen, upstream)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// waitListening waits until something accepts on 127.0.0.1:port in pod p.
// Loopback is never intercepted, so this reaches the listener itself.
func waitListening(ctx context.Context, p *netns.Pod, port int) error {
	deadline := time.Now().Add(10 * time.Second)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for {
		err := p.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("waiting for a listener on %s in pod %s: %w", addr, p.Name, errors.Join(err, ctx.Err()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReady waits until the meshproxy in pod p answers 200 on /ready.
func waitReady(ctx context.Context, p *netns.Pod) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, body, err := adminRequest(p, http.MethodGet, "/ready", 5*time.Second)
		if err == nil && status == http.StatusOK {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%d: %s", status, body)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("waiting for meshproxy in pod %s to be ready: %w", p.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// adminRequest sends one request to the admin API of the meshproxy in pod
// p, on the pod's loopback. It dials in the pod's namespace itself, since
// net/http would dial from a goroutine outside it.
func adminRequest(p *netns.Pod, method, path string, timeout time.Duration) (status int, body []byte, err error) {
	err = p.Do(func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", wellknown.ProxyAdminPort), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, path); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		status = resp.StatusCode
		body, err = io.ReadAll(resp.Body)
		return err
	})
	return status, body, err
}

// cpuSeconds is the user+system time of pid and its children (nginx's
// worker) so far, from /proc/<pid>/stat, whose times are in USER_HZ ticks:
// 100 per second on every Linux the kernel ABI promises.
func cpuSeconds(pid int) (float64, error) {
	total := 0.0
	for _, p := range withChildren(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return 0, err
		}
		// Fields after the parenthesised command name, which may hold spaces.
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		total += (utime + stime) / 100
	}
	return total, nil
}

// statusKB is the sum of a field in kB (VmHWM:, VmRSS:) of
// /proc/<pid>/status over pid and its children, in bytes.
func statusKB(pid int, field string) (int64, error) {
	var total int64
	for _, p := range withChildren(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, field); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				total += kb * 1024
			}
		}
	}
	return total, nil
}

func withChildren(pid int) []int {
	out := []int{pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return out
	}
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
		}
	}
	return out
}
