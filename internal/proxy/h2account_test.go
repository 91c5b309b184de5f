package proxy

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshctl/mesh/internal/proxy/metrics"
)

// h2Conn is a raw client connection to the proxy, past its SETTINGS.
type h2Conn struct {
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	c := dialWithDeadline(t, addr)
	io.WriteString(c, http2.ClientPreface)
	h := &h2Conn{c: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.hb)
	h.fr.WriteSettings()
	return h
}

// block is the header block of a GET with the given extra fields.
func (h *h2Conn) block(extra ...hpack.HeaderField) []byte {
	h.hb.Reset()
	for _, f := range append([]hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: "web"}, {Name: ":path", Value: "/"}}, extra...) {
		h.enc.WriteField(f)
	}
	return bytes.Clone(h.hb.Bytes())
}

// sendBlock sends a header block on stream, in frames of at most 16 KiB.
func (h *h2Conn) sendBlock(stream uint32, blk []byte) {
	const max = 16 << 10
	first := blk[:min(len(blk), max)]
	blk = blk[len(first):]
	h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: first, EndStream: true, EndHeaders: len(blk) == 0})
	for len(blk) > 0 {
		n := min(len(blk), max)
		h.fr.WriteContinuation(stream, n == len(blk), blk[:n])
		blk = blk[n:]
	}
}

// outcome reads until the stream's response headers or the connection's
// end: "431", "GOAWAY <code>" or "closed".
func (h *h2Conn) outcome(stream uint32) string {
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return "closed"
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == stream {
				return f.PseudoValue("status")
			}
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		}
	}
}

// errorsOf is meshproxy_errors_total for reason, summed over series.
func errorsOf(t *testing.T, tp *testProxy, reason string) string {
	t.Helper()
	sum := 0
	for _, l := range strings.Split(tp.metricsText(t), "\n") {
		if strings.HasPrefix(l, "meshproxy_errors_total{") && strings.Contains(l, `reason="`+reason+`"`) {
			n, _ := strconv.Atoi(l[strings.LastIndexByte(l, ' ')+1:])
			sum += n
		}
	}
	return strconv.Itoa(sum)
}

// Every request head over the limit is counted as header_limit, whatever
// the answer: 431 on the stream, or (for one field longer than the
// server decodes, or a block that goes on past the limit) the server's
// GOAWAY; never as a protocol error as well.
func TestHTTP2HeaderLimitAccounting(t *testing.T) {
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tp := startProxy(t, "", fixedDst(backend))
	field := func(n int) hpack.HeaderField { return hpack.HeaderField{Name: "x-big", Value: strings.Repeat("a", n)} }
	many := func(total int) []hpack.HeaderField {
		var fs []hpack.HeaderField
		for i := 0; total > 0; i++ {
			fs = append(fs, hpack.HeaderField{Name: "x-f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)), Value: strings.Repeat("b", min(total, 1000))})
			total -= 1000
		}
		return fs
	}
	for i, tc := range []struct {
		name   string
		fields []hpack.HeaderField
		want   string
	}{
		{"within the limit", []hpack.HeaderField{field(1000)}, "200"},
		{"just over (the proxy's 431)", []hpack.HeaderField{field(61500)}, "431"},
		{"one field over what the server decodes", []hpack.HeaderField{field(70000)}, "GOAWAY COMPRESSION_ERROR"},
		{"many fields going on past the limit", many(80000), "GOAWAY PROTOCOL_ERROR"},
	} {
		h := dialH2(t, tp.inbound)
		h.sendBlock(1, h.block(tc.fields...))
		if got := h.outcome(1); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
		if got, want := errorsOf(t, tp, "header_limit"), string(rune('0'+i)); got != want {
			t.Errorf("after %s: header_limit %s, want %s", tc.name, got, want)
		}
	}
	if got := errorsOf(t, tp, "http2_protocol"); got != "0" {
		t.Errorf("header limits also counted as http2_protocol: %s", got)
	}
}

// Floods the HTTP/2 server refuses are counted as http2_flood.
func TestHTTP2FloodsAreCounted(t *testing.T) {
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
	}))
	tp := startProxy(t, "", fixedDst(backend))

	t.Run("settings", func(t *testing.T) {
		// 101 distinct parameters: the server's limit is 100.
		h := dialH2(t, tp.inbound)
		var ss []http2.Setting
		for i := range 101 {
			ss = append(ss, http2.Setting{ID: http2.SettingID(0x100 + i), Val: 1})
		}
		h.fr.WriteSettings(ss...)
		if got := h.outcome(1); got != "GOAWAY PROTOCOL_ERROR" {
			t.Errorf("101 settings: %s", got)
		}
		waitFor(t, func() bool { return errorsOf(t, tp, "http2_flood") == "1" })
	})
	t.Run("ping", func(t *testing.T) {
		// PINGs whose acknowledgements are never read.
		if raceEnabled {
			// Under the race detector the Go server stops reading the
			// flood (4 MB in) without reaching its queue limit, and the
			// connection stays open, idle; not understood yet.
			t.Skip("the server does not refuse the flood under the race detector")
		}
		h := dialH2(t, tp.inbound)
		h.c.(*net.TCPConn).SetReadBuffer(4 << 10)
		h.c.SetDeadline(time.Now().Add(20 * time.Second))
		var data [8]byte
		for range 1_000_000 {
			if h.fr.WritePing(false, data) != nil {
				break // the server closed the connection
			}
		}
		for deadline := time.Now().Add(20 * time.Second); errorsOf(t, tp, "http2_flood") != "2"; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("PING flood: http2_flood %s, want 2", errorsOf(t, tp, "http2_flood"))
			}
		}
	})
	t.Run("rapid reset", func(t *testing.T) {
		// The server refuses a rapid reset when reset streams' handlers
		// pile up; the proxy's handlers end as soon as their stream is
		// reset, so the real server could not be made to refuse it here.
		// What it reports then is fed in as it would name it.
		acct := &h2Account{series: tp.metrics.Series(metrics.Inbound, "web")}
		before, _ := strconv.Atoi(errorsOf(t, tp, "http2_flood"))
		acct.countError("conn_ENHANCE_YOUR_CALM_too_many_early_resets")
		if got := errorsOf(t, tp, "http2_flood"); got != strconv.Itoa(before+1) {
			t.Errorf("rapid reset: http2_flood %s, want %d", got, before+1)
		}
	})
	if got := errorsOf(t, tp, "http2_protocol"); got != "0" {
		t.Errorf("floods also counted as http2_protocol: %s", got)
	}
}

// A protocol error the server ends the connection for is counted as
// http2_protocol.
func TestHTTP2ProtocolErrorIsCounted(t *testing.T) {
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tp := startProxy(t, "", fixedDst(backend))
	h := dialH2(t, tp.inbound)
	h.fr.WriteData(1, true, []byte("x")) // DATA on an idle stream
	if got := h.outcome(1); got != "GOAWAY PROTOCOL_ERROR" {
		t.Errorf("DATA on an idle stream: %s", got)
	}
	waitFor(t, func() bool { return errorsOf(t, tp, "http2_protocol") == "1" })
	// A client that simply goes away is no error.
	h2 := dialH2(t, tp.inbound)
	h2.sendBlock(1, h2.block())
	h2.outcome(1)
	h2.c.Close()
	time.Sleep(200 * time.Millisecond)
	if got := errorsOf(t, tp, "http2_protocol") + errorsOf(t, tp, "http2_flood"); got != "10" {
		t.Errorf("after a clean close: http2_protocol+http2_flood %s, want 1 and 0", got)
	}
}
