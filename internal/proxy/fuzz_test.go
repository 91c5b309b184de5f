package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzHTTP1Conn sends arbitrary bytes to the outbound listener as the start
// of an HTTP/1 connection. Whatever the bytes, the proxy must answer with a
// well-formed HTTP response or close, within a bound, and must not crash.
func FuzzHTTP1Conn(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
	} {
		f.Add([]byte(s))
	}
	backend := echoBackend(f)
	tp := startProxy(f, withService("limits: {headerReadTimeout: 200ms, streamIdleTimeout: 500ms, detectTimeout: 100ms, idleTimeout: 200ms}\n", backend), fixedDst(serviceVIP))
	f.Fuzz(func(t *testing.T, in []byte) {
		if !bytes.HasPrefix(in, []byte("GET ")) && !bytes.HasPrefix(in, []byte("POST ")) && !bytes.HasPrefix(in, []byte("HEAD ")) {
			in = append([]byte("GET / HTTP/1.1\r\n"), in...)
		}
		c, err := net.Dial("tcp", tp.outbound)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		br := bufio.NewReader(c)
		for {
			if _, err := br.Peek(1); err != nil {
				if err != io.EOF && !strings.Contains(err.Error(), "reset") {
					t.Fatalf("connection neither answered nor closed: %v", err)
				}
				return
			}
			if !bytes.HasPrefix(peekAll(br), []byte("HTTP/1.")) {
				// Detection gave up on these bytes: forwarded as TCP, and
				// the answer is the backend's business.
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("malformed response: %v", err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil && resp.StatusCode != 101 {
				return // cut mid-body by a timeout or the backend
			}
		}
	})
}

func peekAll(br *bufio.Reader) []byte {
	b, _ := br.Peek(min(br.Buffered(), 7))
	return b
}
