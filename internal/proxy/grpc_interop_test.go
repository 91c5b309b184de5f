package proxy

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/testenv"
)

// TestGRPCInterop runs the gRPC interoperability cases with the real
// grpc-go interop client and server, through an outbound proxy and then an
// inbound proxy, as a call between two meshed pods travels: client →
// outbound (service VIP → endpoint) → inbound → server.
func TestGRPCInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the grpc-go interop binaries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	serverBin, err := testenv.GRPCInteropServer.Path(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clientBin, err := testenv.GRPCInteropClient.Path(ctx)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	srv := exec.CommandContext(ctx, serverBin, "-port", strconv.Itoa(port), "-use_tls=false")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", port))

	server := startProxy(t, "", fixedDst(fmt.Sprintf("127.0.0.1:%d", port)))
	_, inPort, _ := net.SplitHostPort(server.inbound)
	client := startProxy(t, `services:
- name: interop
  namespace: test
  addresses: [10.96.0.20]
  ports: [{port: 8080, targetPort: `+inPort+`}]
  endpoints: [{address: 127.0.0.1}]
`, fixedDst("10.96.0.20:8080"))
	_, outPort, _ := net.SplitHostPort(client.outbound)

	for _, tc := range []string{
		"empty_unary", "large_unary", "client_streaming", "server_streaming",
		"ping_pong", "empty_stream", "timeout_on_sleeping_server",
		"cancel_after_begin", "cancel_after_first_response",
		"status_code_and_message", "special_status_message", "custom_metadata",
		"unimplemented_method", "unimplemented_service",
	} {
		t.Run(tc, func(t *testing.T) {
			out, err := exec.CommandContext(ctx, clientBin,
				"-server_host", "127.0.0.1", "-server_port", outPort,
				"-use_tls=false", "-test_case", tc).CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
	// Both hops saw HTTP/2 and forwarded it as such, not as TCP.
	for _, c := range []struct {
		p    *testProxy
		want string
	}{
		{client, `meshproxy_detections_total{direction="outbound",protocol="h2c"}`},
		{server, `meshproxy_detections_total{direction="inbound",protocol="h2c"}`},
	} {
		if m := c.p.metricsText(t); !strings.Contains(m, c.want) || strings.Contains(m, c.want+" 0\n") {
			t.Errorf("no h2c detection (%s) in\n%s", c.want, m)
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
