package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.b.String()), "\n")
}

func TestAccessLog(t *testing.T) {
	var buf lockedBuffer
	backend := echoBackend(t)
	tp := startProxy(t, "", fixedDst(backend), func(o *Options) { o.AccessLog = &buf })
	if got := rawRequest(t, tp.outbound, "POST /p?q=1 HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc"); got != "HTTP/1.1 200 OK" {
		t.Fatal(got)
	}
	// A TCP connection is logged when it closes.
	tcpBackend := listenTCP(t, func(c net.Conn) { io.Copy(c, c) })
	tp2 := startProxy(t, "", fixedDst(tcpBackend), func(o *Options) { o.AccessLog = &buf })
	c, err := net.Dial("tcp", tp2.outbound)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "\x00\x01hello")
	c.(*net.TCPConn).CloseWrite()
	io.ReadAll(c)
	c.Close()
	waitFor(t, func() bool { return len(buf.lines()) == 2 })
	var http1, tcp AccessEntry
	lines := buf.lines()
	json.Unmarshal([]byte(lines[0]), &http1)
	json.Unmarshal([]byte(lines[1]), &tcp)
	if http1.Protocol != "http1" || http1.Method != "POST" || http1.Path != "/p?q=1" || http1.Authority != "web" ||
		http1.Status != 200 || http1.BytesReceived != 3 || http1.BytesSent != 3 || http1.Upstream != backend ||
		http1.Direction != "outbound" || http1.Service != "unknown" || http1.Destination != backend {
		t.Errorf("HTTP entry %+v", http1)
	}
	if tcp.Protocol != "tcp" || tcp.BytesReceived != 7 || tcp.BytesSent != 7 || tcp.Upstream != tcpBackend {
		t.Errorf("TCP entry %+v", tcp)
	}
}
