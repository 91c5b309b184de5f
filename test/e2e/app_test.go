package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshctl/mesh/internal/testenv"
)

// The applications of the end-to-end test are this test binary run again in
// a pod as an ordinary user, with E2E_APP naming the role. A separate process
// is needed because the interception rules tell the proxy from the
// application by the socket's user, which a thread of the test cannot change
// alone.
const appEnv = "E2E_APP"

// podEnv names the pod a server app runs in, which it puts in its answers.
const podEnv = "E2E_POD"

func TestMain(m *testing.M) {
	if role := os.Getenv(appEnv); role != "" {
		if err := runApp(role, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "app:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// The env (a real API server) starts only for the tests that ask for it.
	os.Exit(testenv.Main(m, testenv.Options{}))
}

// Ports of the server application. Each serves one case of the test.
const (
	portHTTP           = 8080 // HTTP/1.1 and h2c, through both proxies
	portTCP            = 9000 // line echo, opaque to the proxies
	portGRPC           = 9500 // gRPC health service over h2c
	portSkipInbound    = 9100 // HTTP, in the server's --skip-inbound-ports
	portSkipOutbound   = 9200 // HTTP, in the client's --skip-outbound-ports
	appTimeout         = 5 * time.Second
	helloPrefix        = "hello"
	tcpEchoPrefix      = "echo: "
	grpcServingMessage = "SERVING"
)

func runApp(role string, args []string) error {
	switch role {
	case "server":
		return serve()
	case "keepalive":
		// keepalive ADDR DURATION: GET every 50 ms on one kept-alive
		// connection, one line per answer ("ok <pod>" or "error <err>").
		if len(args) != 2 {
			return errors.New("keepalive wants an address and a duration")
		}
		d, err := time.ParseDuration(args[1])
		if err != nil {
			return err
		}
		return keepAlive(args[0], d)
	case "steady":
		// steady ADDR: traffic until SIGTERM (see steady), then a summary.
		if len(args) != 1 {
			return errors.New("steady wants an address")
		}
		return steady(args[0])
	case "http1", "h2c", "tcp", "grpc":
		if len(args) != 1 {
			return fmt.Errorf("%s wants one address", role)
		}
		ctx, cancel := context.WithTimeout(context.Background(), appTimeout)
		defer cancel()
		out, err := call(ctx, role, args[0])
		if err != nil {
			return err
		}
		fmt.Print(out)
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}

// serve runs every server port until killed.
func serve() error {
	pod := os.Getenv(podEnv)
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The client identity header is what the server's proxy vouches
		// for; pod names the replica that answered.
		fmt.Fprintf(w, "%s proto=%s host=%s client-id=%s pod=%s", helloPrefix, r.Proto, r.Host, r.Header.Get("X-Meshctl-Client-Id"), pod)
	})
	errc := make(chan error, 5)
	for _, port := range []int{portHTTP, portSkipInbound, portSkipOutbound} {
		srv := &http.Server{Addr: fmt.Sprintf(":%d", port), Handler: hello, ReadHeaderTimeout: appTimeout, Protocols: new(http.Protocols)}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
		go func() { errc <- srv.ListenAndServe() }()
	}
	go func() { errc <- serveEcho(fmt.Sprintf(":%d", portTCP)) }()
	go func() {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", portGRPC))
		if err != nil {
			errc <- err
			return
		}
		s := grpc.NewServer()
		healthpb.RegisterHealthServer(s, health.NewServer())
		errc <- s.Serve(ln)
	}()
	return <-errc
}

func serveEcho(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(appTimeout))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(c, tcpEchoPrefix+line)
		}()
	}
}

// call makes one request of the given kind and returns what the server said.
func call(ctx context.Context, kind, addr string) (string, error) {
	switch kind {
	case "http1", "h2c":
		tr := &http.Transport{Protocols: new(http.Protocols)}
		if kind == "h2c" {
			tr.Protocols.SetUnencryptedHTTP2(true)
		} else {
			tr.Protocols.SetHTTP1(true)
		}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		if err != nil {
			return "", err
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("status=%d client-proto=%s %s", resp.StatusCode, resp.Proto, body), nil
	case "tcp":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(appTimeout))
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	case "grpc":
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return "", err
		}
		return resp.GetStatus().String(), nil
	}
	return "", fmt.Errorf("unknown call %q", kind)
}

// keepAlive sends requests on one connection for d and prints, for each,
// the pod that answered.
func keepAlive(addr string, d time.Duration) error {
	tr := &http.Transport{Protocols: new(http.Protocols), MaxConnsPerHost: 1}
	tr.Protocols.SetHTTP1(true)
	c := &http.Client{Transport: tr, Timeout: appTimeout}
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			fmt.Printf("%s error %v\n", time.Now().Format(time.RFC3339Nano), err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_, pod, _ := strings.Cut(string(body), " pod=")
		fmt.Printf("%s ok %d %s\n", time.Now().Format(time.RFC3339Nano), resp.StatusCode, pod)
	}
	return nil
}

// contains reports whether the app's output has want, for readable checks.
func contains(out, want string) bool { return strings.Contains(out, want) }

// steady sends requests to addr until SIGTERM, in three loops at once: one
// kept-alive HTTP/1 connection (every 50 ms), a new HTTP/1 connection per
// request (every 100 ms) and one h2c connection (every 100 ms). It prints a
// line per failure ("fail <loop> <time> <error or status>") as it happens
// and, when stopped, one line per loop: "steady <loop> ok=N failed=M".
func steady(addr string) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
	done := make(chan struct{})
	type loop struct {
		name       string
		every      time.Duration
		client     *http.Client
		ok, failed atomic.Int64
	}
	transport := func(h2c, keepAlive bool) *http.Client {
		tr := &http.Transport{Protocols: new(http.Protocols), DisableKeepAlives: !keepAlive, MaxConnsPerHost: 1}
		if h2c {
			tr.Protocols.SetUnencryptedHTTP2(true)
		} else {
			tr.Protocols.SetHTTP1(true)
		}
		return &http.Client{Transport: tr, Timeout: appTimeout}
	}
	loops := []*loop{
		{name: "keepalive", every: 50 * time.Millisecond, client: transport(false, true)},
		{name: "new-connection", every: 100 * time.Millisecond, client: transport(false, false)},
		{name: "h2c", every: 100 * time.Millisecond, client: transport(true, true)},
	}
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(l.every)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
				}
				resp, err := l.client.Get("http://" + addr + "/")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					fmt.Printf("fail %s %s %v\n", l.name, time.Now().Format(time.RFC3339Nano), err)
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	<-stop
	close(done)
	wg.Wait()
	for _, l := range loops {
		fmt.Printf("steady %s ok=%d failed=%d\n", l.name, l.ok.Load(), l.failed.Load())
	}
	return nil
}
