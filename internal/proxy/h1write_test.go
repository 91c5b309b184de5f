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

// writeResponse must write what resp.Write writes, or decline.
func TestWriteResponseMatchesResponseWrite(t *testing.T) {
	for _, tc := range []struct{ method, raw string }{
		{"GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello"},
		{"GET", "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"},
		{"POST", "HTTP/1.0 201 Made It\r\nContent-Length: 2\r\n\r\nok"},
		{"GET", "HTTP/1.1 299 \r\nContent-Length: 1\r\n\r\nx"},
		{"GET", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"},
		{"GET", "HTTP/1.1 204 No Content\r\n\r\n"},
		{"GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
	} {
		for _, keep := range []bool{true, false} {
			parse := func() (*http.Request, *http.Response) {
				req, _ := http.NewRequest(tc.method, "http://a/", nil)
				resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(tc.raw)), req)
				if err != nil {
					t.Fatalf("%q: %v", tc.raw, err)
				}
				prepareClientResponse(req, resp, keep)
				return req, resp
			}
			req, resp := parse()
			var want bytes.Buffer
			if err := resp.Write(&want); err != nil {
				t.Fatalf("%q: Response.Write: %v", tc.raw, err)
			}
			req, resp = parse()
			var got bytes.Buffer
			bw := bufio.NewWriter(&got)
			ok, err := writeResponse(bw, req, resp)
			bw.Flush()
			if err != nil {
				t.Fatalf("%q: %v", tc.raw, err)
			}
			if !ok {
				if got.Len() != 0 {
					t.Errorf("%q: declined after writing %q", tc.raw, got.String())
				}
				t.Logf("%s %q keep=%v: declined", tc.method, tc.raw, keep)
				continue
			}
			if got.String() != want.String() {
				t.Errorf("%q keep=%v:\n got %q\nwant %q", tc.raw, keep, got.String(), want.String())
			}
		}
	}
}

// BenchmarkWriteResponse compares writeResponse with resp.Write for the
// load harness's response (200, 1 KiB body).
func BenchmarkWriteResponse(b *testing.B) {
	raw := "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nDate: Sat, 21 Nov 2026 17:00:00 GMT\r\nContent-Length: 1024\r\n\r\n" + string(kib)
	req, _ := http.NewRequest("POST", "http://a/echo", nil)
	bw := bufio.NewWriterSize(io.Discard, 4096)
	var sr strings.Reader
	br := bufio.NewReader(&sr)
	for _, name := range []string{"Response.Write", "writeResponse"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				sr.Reset(raw)
				br.Reset(&sr)
				resp, err := http.ReadResponse(br, req)
				if err != nil {
					b.Fatal(err)
				}
				prepareClientResponse(req, resp, true)
				b.StartTimer()
				if name == "writeResponse" {
					writeResponse(bw, req, resp)
				} else {
					resp.Write(bw)
				}
				bw.Flush()
			}
		})
	}
}
