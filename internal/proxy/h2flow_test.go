package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// bigResponse is the size of the responses the flow-control tests ask for.
const bigResponse = 20 << 20

// bulkBackend serves bigResponse bytes to every request from one shared
// buffer (so that the backend itself holds nothing per stream) and counts
// the bytes its handlers managed to write.
func bulkBackend(t testing.TB) (addr string, written *atomic.Int64) {
	written = new(atomic.Int64)
	chunk := make([]byte, 32<<10)
	addr = h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(bigResponse))
		for sent := 0; sent < bigResponse; sent += len(chunk) {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	return addr, written
}

// stalledClient opens an h2c connection that announces
// SETTINGS_INITIAL_WINDOW_SIZE=0 and then asks for n large responses,
// whose bodies it never lets the proxy send. It reads (and drops) what the
// proxy sends, so that only flow control holds the data back.
func stalledClient(t testing.TB, addr string, n int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := range n {
		hb.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "web"}, {":path", "/big"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(),
			EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
				fr.WriteSettingsAck()
			}
		}
	}()
}

// liveBytes is the memory the process holds after a collection: heap in
// use and goroutine stacks.
func liveBytes() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// rss is the process's resident set (Linux), for the log: it includes
// the test's own clients and backend, and memory the runtime has not
// returned yet.
func rss() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// waitStill waits until v stops growing (no change for 500 ms) and
// returns its value.
func waitStill(t testing.TB, v *atomic.Int64, limit time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(limit)
	last, since := v.Load(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if cur := v.Load(); cur != last {
			last, since = cur, time.Now()
		} else if time.Since(since) > 500*time.Millisecond {
			return last
		}
	}
	t.Fatalf("still growing after %v: %d", limit, v.Load())
	return 0
}

// Clients that never open their flow-control windows make the proxy hold
// only a bounded amount of the upstream's data: 2 connections x 100
// stalled streams of a 20 MB response add less than 64 MB, while a client
// on another connection downloads the same responses at full speed over
// the same upstream connections.
func TestHTTP2StalledClientsAreBounded(t *testing.T) {
	backend, written := bulkBackend(t)
	tp := startProxy(t, "", fixedDst(backend))
	normal := h2cClient(tp.inbound)
	download := func() error {
		resp, err := normal.Get("http://web/big")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && n != bigResponse {
			err = fmt.Errorf("got %d bytes", n)
		}
		return err
	}
	// Warm up: upstream connection, buffers, pools.
	if err := download(); err != nil {
		t.Fatal(err)
	}
	before, rssBefore := liveBytes(), rss()
	for range 2 {
		stalledClient(t, tp.inbound, 100)
	}
	pushed := waitStill(t, written, 20*time.Second)
	held := liveBytes()
	growth := int64(held) - int64(before)
	t.Logf("200 stalled streams: the backend wrote %d MB in all; the process holds %d MB more (%d KiB a stream); RSS %d MB -> %d MB",
		pushed>>20, growth>>20, growth/200>>10, rssBefore>>20, rss()>>20)
	if growth >= 64<<20 {
		t.Errorf("200 stalled streams hold %d MB (limit 64 MB)", growth>>20)
	}
	// A normal client is unaffected while the stalled streams are held.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() { errs <- download() })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("normal downloads did not finish in 60 s beside the stalled streams")
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("normal download beside stalled streams: %v", err)
		}
	}
}

// A request body the upstream does not read holds a bounded part of the
// client's connection window: other uploads on the same connection go on.
func TestHTTP2StalledUploadLeavesConnectionOpen(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/stall" {
				<-release
				return
			}
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
		}),
		Protocols: new(http.Protocols),
		// The application's own connection window must outlast its
		// stream window, or the stalled stream stops the proxy's one
		// connection to it (Go's default is 1 MiB for both).
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 256 << 10, MaxReceiveBufferPerConnection: 4<<20 - 1},
	}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go srv.Serve(ln)
	defer srv.Close()
	backend := ln.Addr().String()
	tp := startProxy(t, "", fixedDst(backend))
	c := h2cClient(tp.inbound) // one connection for every request
	go func() {
		// Never read upstream: the proxy buffers what flow control lets in.
		req, _ := http.NewRequest("POST", "http://web/stall", io.LimitReader(zeros{}, 8<<20))
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(500 * time.Millisecond) // the stalled upload fills its windows
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://web/read", io.LimitReader(zeros{}, 4<<20))
		resp, err := c.Do(req)
		if err != nil {
			done <- err
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != strconv.Itoa(4<<20) {
			err = fmt.Errorf("upstream read %s bytes", b)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an upload on the connection of a stalled upload did not finish in 10 s")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// BenchmarkH2Download20MB downloads one 20 MB response per iteration from
// an h2c backend, directly and through the inbound listener, to show what
// the proxy's receive windows cost a large download (compare the two in
// one run; the machine's load moves both).
func BenchmarkH2Download20MB(b *testing.B) {
	backend, _ := bulkBackend(b)
	run := func(b *testing.B, addr string) {
		c := h2cClient(addr)
		b.SetBytes(bigResponse)
		for b.Loop() {
			resp, err := c.Get("http://web/big")
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != bigResponse {
				b.Fatalf("read %d bytes: %v", n, err)
			}
			resp.Body.Close()
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, backend) })
	b.Run("proxy", func(b *testing.B) {
		tp := startProxy(b, "", fixedDst(backend))
		run(b, tp.inbound)
	})
}
