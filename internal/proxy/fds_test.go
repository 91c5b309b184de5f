package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fdCount is the number of file descriptors this process holds, and how
// many of them are pipes.
type fdCount struct{ total, pipes int }

func countFDs(t testing.TB) fdCount {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("counting file descriptors: %v", err)
	}
	var c fdCount
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		c.total++
		if strings.HasPrefix(target, "pipe:") {
			c.pipes++
		}
	}
	return c
}

// echoPlain answers every byte it reads with the same byte, with read and
// write rather than io.Copy: io.Copy between two TCP connections would
// splice through pipes of the Go runtime, which this test process would
// then count as the proxy's.
func echoPlain(c net.Conn) {
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// openEchoed opens a connection to addr and has one byte echoed through
// it, so that the proxy has dialed the upstream and both copies wait.
func openEchoed(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("echo through %s: %v", addr, err)
	}
	c.SetDeadline(time.Time{})
	return c
}

// An idle opaque connection holds its two sockets and nothing else: no
// splice pipe waits with it (the issue measured 6 descriptors: two
// sockets and two pipes of two descriptors each). Every descriptor is back
// within seconds of the close, pipes included.
func TestOpaqueIdleConnectionFDs(t *testing.T) {
	const n = 300
	backend := listenTCP(t, echoPlain)
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(t, "outbound: {address: \"127.0.0.1:0\", opaquePorts: ["+port+"]}\n", fixedDst(backend))
	// Pipes that earlier tests left idle in the pool close within a
	// second or two; the count starts without them.
	waitFor(t, func() bool { open, _ := splicePipes.stats(); return open == 0 })
	before := countFDs(t)

	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		conns = append(conns, openEchoed(t, tp.outbound))
	}
	// The echo came back, so both copies of every connection have moved
	// their byte and wait for the next. The pipes that moved them are
	// idle in the pool until its sweep closes them (a second).
	var open fdCount
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		open = countFDs(t)
		if open.pipes <= before.pipes || time.Now().After(deadline) {
			break
		}
	}
	// This process holds each connection's two ends outside the proxy
	// too: the test's client and the backend's accepted socket.
	proxyFDs := open.total - before.total - 2*n
	perConn := float64(proxyFDs) / n
	t.Logf("%d idle opaque connections: %d descriptors held by the proxy (%.2f per connection), %d pipes", n, proxyFDs, perConn, open.pipes-before.pipes)
	if perConn > 3 {
		t.Errorf("an idle opaque connection holds %.2f descriptors, want at most 3", perConn)
	}
	if open.pipes > before.pipes {
		t.Errorf("%d pipes held by idle connections, want none", open.pipes-before.pipes)
	}

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	waitFor(t, func() bool { return tp.listeners[0].active.Load() == 0 })
	closed := time.Now()
	var after fdCount
	for {
		after = countFDs(t)
		if after.total <= before.total || time.Since(closed) > 5*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("after the close: %d descriptors (%d pipes) more than before, %v later", after.total-before.total, after.pipes-before.pipes, time.Since(closed).Round(time.Millisecond))
	if after.total > before.total {
		t.Errorf("5 s after the connections closed, %d descriptors (%d of them pipes) are still held", after.total-before.total, after.pipes-before.pipes)
	}
}

// Bytes keep flowing both ways through many connections at once, and the
// pipes that carried them are all closed again soon after.
func TestOpaqueActiveConnectionsReturnPipes(t *testing.T) {
	backend := listenTCP(t, echoPlain)
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(t, "outbound: {address: \"127.0.0.1:0\", opaquePorts: ["+port+"]}\n", fixedDst(backend))
	before := countFDs(t)
	payload := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
	errc := make(chan error, 8)
	for range 8 {
		go func() {
			c, err := net.Dial("tcp", tp.outbound)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			go io.WriteString(c, payload)
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(c, got); err != nil {
				errc <- err
				return
			}
			if string(got) != payload {
				errc <- io.ErrUnexpectedEOF
				return
			}
			errc <- nil
		}()
	}
	for range 8 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return tp.listeners[0].active.Load() == 0 })
	deadline := time.Now().Add(5 * time.Second)
	for countFDs(t).pipes > before.pipes && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if after := countFDs(t); after.pipes > before.pipes {
		t.Errorf("%d pipes still open 5 s after the connections closed", after.pipes-before.pipes)
	}
}

func metricValue(t testing.TB, text, series string) int {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return int(n)
		}
	}
	return -1
}

// A neighbour that floods one listener up to its descriptor budget gets
// further connections closed at once, counted by direction, while the
// other listener (the pod's own outbound traffic) keeps serving.
func TestFDBudgetPerListener(t *testing.T) {
	const budget = 20 // descriptors: 10 connections per listener
	backend := listenTCP(t, echoPlain)
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(t, "limits: {fdBudget: "+strconv.Itoa(budget)+"}\n"+
		"outbound: {address: \"127.0.0.1:0\", opaquePorts: ["+port+"]}\n"+
		"inbound: {address: \"127.0.0.1:0\", opaquePorts: ["+port+"]}\n", fixedDst(backend))

	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range budget / fdsPerConn {
		held = append(held, openEchoed(t, tp.inbound))
	}
	for range 3 {
		c := dialWithDeadline(t, tp.inbound)
		c.Write([]byte{'x'})
		// Closed before its byte was read: an end of stream, or a reset.
		if b, err := io.ReadAll(c); len(b) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a connection beyond the inbound budget got %q, %v; want it closed at once", b, err)
		}
	}
	// The outbound listener has a budget of its own: all of it is there.
	for range budget / fdsPerConn {
		held = append(held, openEchoed(t, tp.outbound))
	}
	m := tp.metricsText(t)
	for series, want := range map[string]int{
		`meshproxy_fd_budget_refused_total{direction="inbound"}`:                                  3,
		`meshproxy_fd_budget_refused_total{direction="outbound"}`:                                 0,
		`meshproxy_fd_budget{direction="inbound"}`:                                                budget,
		`meshproxy_fd_budget{direction="outbound"}`:                                               budget,
		`meshproxy_errors_total{direction="inbound",service="unknown",reason="connection_limit"}`: 3,
		`meshproxy_connections_active{direction="inbound"}`:                                       budget / fdsPerConn,
	} {
		if got := metricValue(t, m, series); got != want {
			t.Errorf("%s = %d, want %d", series, got, want)
		}
	}

	// A connection that closes gives its share back.
	held[0].Close()
	waitFor(t, func() bool { return tp.listeners[1].active.Load() < budget/fdsPerConn })
	held[0] = openEchoed(t, tp.inbound)
}

// Without a configured budget, each listener gets its share of the
// process's RLIMIT_NOFILE.
func TestFDBudgetDefaultsFromRlimit(t *testing.T) {
	for _, c := range []struct {
		limit                    uint64
		listener, pipes, reserve int
	}{
		{20000, 8000, 1000, 2000},       // the neighbour of the issue: 5,000 idle connections hit the inbound budget at 4,000
		{1024, 333, 51, 256},            // the kernel's default soft limit
		{524287, 231833, 4096, 52428},   // containerd 2 (1024:524288), raised by the Go runtime
		{1048576, 467763, 4096, 104857}, // containerd 1.x (LimitNOFILE=infinity) and CRI-O
		{0, 333, 51, 256},               // unknown: taken as 1024
	} {
		got := planFDs(c.limit)
		if got.Listener != c.listener || got.Pipes != c.pipes || got.Reserve != c.reserve {
			t.Errorf("planFDs(%d) = %+v, want listener %d, pipes %d, reserve %d", c.limit, got, c.listener, c.pipes, c.reserve)
		}
		if c.limit != 0 && uint64(2*got.Listener+2*got.Pipes+got.Reserve) > c.limit {
			t.Errorf("planFDs(%d) hands out more than the limit: %+v", c.limit, got)
		}
	}
	tp := startProxy(t, "", fixedDst("127.0.0.1:1"))
	want := planFDs(softNofile()).Listener
	if got := metricValue(t, tp.metricsText(t), `meshproxy_fd_budget{direction="inbound"}`); got != want {
		t.Errorf("inbound budget %d, want %d from RLIMIT_NOFILE %d", got, want, softNofile())
	}
}

// A copy that finds no pipe to borrow (the pipes' cap is reached, or the
// process is out of descriptors) moves its bytes through a buffer
// instead, both ways and with half-close. The cap is set to zero here to
// provoke what a real flood would.
func TestOpaqueCopyWithoutPipes(t *testing.T) {
	splicePipes.setMax(0)
	t.Cleanup(func() { splicePipes.setMax(planFDs(softNofile()).Pipes) })
	backend := listenTCP(t, func(c net.Conn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		c.Write(b)
	})
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(t, "outbound: {address: \"127.0.0.1:0\", opaquePorts: ["+port+"]}\n", fixedDst(backend))
	before := countFDs(t)
	c := dialWithDeadline(t, tp.outbound)
	payload := strings.Repeat("fallback", 300000)
	go func() {
		io.WriteString(c, payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != payload {
		t.Fatalf("got %d bytes, %v; want the %d sent", len(b), err, len(payload))
	}
	if n := countFDs(t).pipes - before.pipes; n > 0 {
		t.Errorf("%d pipes opened beyond the cap", n)
	}
}

// The incident, scaled down: a neighbour floods the inbound port
// with idle connections under a small RLIMIT_NOFILE, and with the budget
// the proxy derives from it (no fdBudget configured) the flood is cut at
// the inbound share while the pod's outbound connections still get
// through. The test process holds the neighbour's and the backend's ends
// too, so the limit leaves room for them.
func TestInboundFloodLeavesOutboundServing(t *testing.T) {
	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	backend := listenTCP(t, echoPlain)
	_, port, _ := net.SplitHostPort(backend)
	cfg := "outbound: {address: \"127.0.0.1:0\", opaquePorts: [" + port + "]}\n" +
		"inbound: {address: \"127.0.0.1:0\", opaquePorts: [" + port + "]}\n"

	lowered := saved
	lowered.Cur = uint64(countFDs(t).total) + 1500
	if lowered.Cur > saved.Cur {
		t.Skipf("RLIMIT_NOFILE %d is already lower than this test needs", saved.Cur)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved)
	tp := startProxy(t, cfg, fixedDst(backend))
	plan := planFDs(lowered.Cur)
	if got := metricValue(t, tp.metricsText(t), `meshproxy_fd_budget{direction="inbound"}`); got != plan.Listener {
		t.Fatalf("inbound budget %d, want %d for RLIMIT_NOFILE %d", got, plan.Listener, lowered.Cur)
	}

	share := plan.Listener / fdsPerConn
	const extra = 40
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range share {
		held = append(held, openEchoed(t, tp.inbound))
	}
	for range extra {
		c, err := net.Dial("tcp", tp.inbound)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(c); len(b) != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a connection beyond the inbound share got %q, %v; want it closed at once", b, err)
		}
		c.Close()
	}
	for range 20 {
		held = append(held, openEchoed(t, tp.outbound))
	}
	if got := metricValue(t, tp.metricsText(t), `meshproxy_fd_budget_refused_total{direction="inbound"}`); got != extra {
		t.Errorf("%d inbound connections counted as refused, want %d", got, extra)
	}
}

// TestGaugesAreDocumented fails when the proxy writes a series without
// its row in docs/proxy.md, and when the fdBudget key is not there.
func TestGaugesAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/proxy.md")
	if err != nil {
		t.Fatal(err)
	}
	tp := startProxy(t, "", fixedDst("127.0.0.1:1"))
	for _, g := range tp.Gauges() {
		if !strings.Contains(string(doc), "| `"+g.Name+"` |") {
			t.Errorf("docs/proxy.md has no row for %s", g.Name)
		}
	}
	if !strings.Contains(string(doc), "  fdBudget: ") {
		t.Error("docs/proxy.md does not list limits.fdBudget with its default")
	}
}
