package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// writeRequest must write what req.Write writes, or decline.
func TestWriteRequestMatchesRequestWrite(t *testing.T) {
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /p/%41?q=1&r=%20 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/8\r\nAccept: */*\r\nX-A: 1\r\nX-A: 2\r\nConnection: X-Hop\r\nX-Hop: y\r\n\r\n",
		"GET http://abs.example/x?y HTTP/1.1\r\nHost: other\r\nUser-Agent: \r\n\r\n",
		"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
		"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"PUT /e HTTP/1.1\r\nHost: a\r\n\r\n",
		"DELETE /e HTTP/1.1\r\nHost: a\r\n\r\n",
		"HEAD / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]:80\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: b\u00fccher.example\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		parse := func() (*http.Request, []byte) {
			req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				t.Fatalf("%q: %v", raw, err)
			}
			body := &h1Body{rc: req.Body}
			if prepareUpstreamRequest(req, "127.0.0.1:9", body) {
				b, _ := io.ReadAll(body.rc)
				req.Body = io.NopCloser(bytes.NewReader(b))
				return req, b
			}
			return req, nil
		}
		req, _ := parse()
		var want bytes.Buffer
		if err := req.Write(&want); err != nil {
			t.Fatalf("%q: Request.Write: %v", raw, err)
		}
		req, b := parse()
		var got bytes.Buffer
		bw := bufio.NewWriter(&got)
		ok, err := writeRequest(bw, req, b)
		bw.Flush()
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if !ok {
			if got.Len() != 0 {
				t.Errorf("%q: declined after writing %q", raw, got.String())
			}
			t.Logf("%q: declined", raw)
			continue
		}
		if got.String() != want.String() {
			t.Errorf("%q:\n got %q\nwant %q", raw, got.String(), want.String())
		}
	}
}

// BenchmarkWriteRequest compares writeRequest with req.Write for the load
// harness's request (POST, 1 KiB body held in memory).
func BenchmarkWriteRequest(b *testing.B) {
	raw := "POST /echo HTTP/1.1\r\nHost: 10.96.0.80\r\nUser-Agent: fortio.org/fortio-1.63.9\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n" + string(kib)
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		b.Fatal(err)
	}
	body := &h1Body{rc: req.Body}
	prepareUpstreamRequest(req, "10.0.0.1:8080", body)
	data, _ := io.ReadAll(body.rc)
	bw := bufio.NewWriterSize(io.Discard, 4096)
	var r bytes.Reader
	rc := io.NopCloser(&r)
	b.Run("Request.Write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(data)
			req.Body = rc
			req.Write(bw)
			bw.Flush()
		}
	})
	b.Run("writeRequest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			writeRequest(bw, req, data)
			bw.Flush()
		}
	})
}
