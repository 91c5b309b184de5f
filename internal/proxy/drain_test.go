package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// A request in flight when the drain begins finishes, with Connection:
// close; the listener refuses new connections once the delay is over, and
// Serve returns.
func TestDrainFinishesInFlightHTTP1(t *testing.T) {
	started := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	}))
	defer backend.Close()
	tp := startProxy(t, withService("", hostPort(backend.URL)), fixedDst(serviceVIP), func(o *Options) { o.DrainDelay = 100 * time.Millisecond })
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := proxyClient(tp.outbound).Get("http://x/")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		res <- result{resp: resp, body: string(b)}
	}()
	<-started
	tp.cancel()
	waitFor(t, func() bool { ok, _ := tp.Ready(); return !ok })
	r := <-res
	if r.err != nil || r.body != "done" || !r.resp.Close {
		t.Fatalf("in-flight request: %v %q close=%v", r.err, r.body, r.resp != nil && r.resp.Close)
	}
	select {
	case <-tp.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the drain")
	}
	if _, err := net.Dial("tcp", tp.outbound); err == nil {
		t.Error("listener still accepting after the drain")
	}
}

// An HTTP/2 stream in flight finishes; the connection gets GOAWAY.
func TestDrainFinishesInFlightHTTP2(t *testing.T) {
	started := make(chan struct{})
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	}))
	tp := startProxy(t, "", fixedDst(backend))
	client := h2cClient(tp.inbound)
	res := make(chan string, 1)
	go func() {
		resp, err := client.Get("http://x/")
		if err != nil {
			res <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		res <- string(b)
	}()
	<-started
	tp.cancel()
	if got := <-res; got != "done" {
		t.Fatalf("in-flight stream: %q", got)
	}
	select {
	case <-tp.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// Connections still open at the drain timeout are cut.
func TestDrainTimeoutCutsConnections(t *testing.T) {
	backend := listenTCP(t, func(c net.Conn) { io.Copy(c, c) })
	tp := startProxy(t, "", fixedDst(backend), func(o *Options) { o.DrainTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "\x00hold")
	buf := make([]byte, 5)
	io.ReadFull(c, buf)
	start := time.Now()
	tp.cancel()
	<-tp.done
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("drain took %v with a 200ms timeout", d)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(buf); err == nil {
		t.Error("connection still open after the drain timeout")
	}
}

// The drain timeout bounds an HTTP/1 request waiting on an upstream that
// never answers, not only the client's connection: the proxy exits on
// time.
func TestDrainTimeoutCutsSilentUpstream(t *testing.T) {
	silent := listenTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	tp := startProxy(t, withService("", silent), fixedDst(serviceVIP), func(o *Options) { o.DrainTimeout = 200 * time.Millisecond })
	c := dialWithDeadline(t, tp.outbound)
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n")
	deadline := time.Now().Add(5 * time.Second)
	for tp.metricsText(t) == "" || !strings.Contains(tp.metricsText(t), `meshproxy_connections_active{direction="outbound"} 1`) {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the proxy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let it reach the upstream and wait
	start := time.Now()
	tp.cancel()
	select {
	case <-tp.done:
	case <-time.After(3 * time.Second):
		t.Fatalf("the proxy was still draining %v after a 200ms drain timeout", time.Since(start))
	}
}

func h2cClient(addr string) *http.Client {
	return &http.Client{Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}}}
}

// A proxy restarted under steady load loses no request: the new process
// binds the same ports (SO_REUSEPORT), and the old one drains. The test
// runs in a network namespace of its own with net.ipv4.tcp_migrate_req=1,
// as `meshproxy init` sets it in a pod: without it the kernel resets the
// connections still waiting in the old listener's accept queue when it
// closes, which no user-space drain can prevent.
func TestRestartUnderLoadLosesNoRequest(t *testing.T) {
	ns := newPrivateNetns(t, map[string]string{"net/ipv4/tcp_migrate_req": "1"})
	backendLn, err := ns.listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond)
		io.WriteString(w, "ok")
	})}
	go backend.Serve(backendLn)
	defer backend.Close()
	dst := fixedDst(serviceVIP)
	svc := withService("", backendLn.Addr().String())
	inNS := func(o *Options) { o.Dial = ns.dial }
	var old *testProxy
	ns.do(func() {
		old = startProxy(t, svc, dst, inNS, func(o *Options) { o.DrainDelay = 200 * time.Millisecond })
	})
	cfg := svc + fmt.Sprintf("outbound: {address: %q}\ninbound: {address: \"127.0.0.1:0\"}\n", old.outbound)

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Half the clients keep connections alive, half open a new
			// connection per request.
			tr := &http.Transport{DisableKeepAlives: i%2 == 1, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return ns.dial(ctx, "tcp", old.outbound)
			}}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("http://x/")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if string(b) != "ok" {
						err = fmt.Errorf("body %q", b)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	var next *testProxy
	ns.do(func() { next = startProxy(t, cfg, dst, inNS) })
	if next.outbound != old.outbound {
		t.Fatalf("new proxy on %s, old on %s", next.outbound, old.outbound)
	}
	old.cancel()
	<-old.done
	before := ok.Load()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d requests ok, %d failed; %d after the old proxy exited", ok.Load(), failed.Load(), ok.Load()-before)
	if failed.Load() > 0 {
		t.Errorf("%d requests failed across the restart; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load()-before == 0 {
		t.Error("no request served by the new proxy")
	}
	if !strings.Contains(next.metricsText(t), `code="200"`) {
		t.Error("new proxy counted no request")
	}
}
