package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A request with a connection-specific field or a TE other than
// "trailers" gets its stream reset with PROTOCOL_ERROR (RFC 9113 section
// 8.2.2), counted as bad_request, and the connection goes on: requests
// before and after it, sharing the HPACK dynamic table, are answered.
func TestHTTP2MalformedRequestIsReset(t *testing.T) {
	backend := h2cOnlyBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Token"))
	}))
	tp := startProxy(t, "", fixedDst(backend))
	c := dialWithDeadline(t, tp.inbound)
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	send := func(stream uint32, extra ...string) {
		hb.Reset()
		fields := append([]string{":method", "GET", ":scheme", "http", ":authority", "web", ":path", "/",
			"x-token", "indexed-value"}, extra...)
		for i := 0; i < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		// Split the block so that the check spans a CONTINUATION.
		blk := hb.Bytes()
		half := len(blk) / 2
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: blk[:half], EndStream: true})
		fr.WriteContinuation(stream, true, blk[half:])
	}
	send(1)
	send(3, "connection", "keep-alive")
	send(5, "te", "trailers, deflate")
	send(7, "te", "trailers")
	got := map[uint32]string{}
	for len(got) < 4 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			got[f.StreamID] = "reset " + f.ErrCode.String()
		case *http2.DataFrame:
			got[f.StreamID] += string(f.Data())
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after %v", f.ErrCode, got)
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		}
	}
	want := map[uint32]string{1: "indexed-value", 3: "reset PROTOCOL_ERROR", 5: "reset PROTOCOL_ERROR", 7: "indexed-value"}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("stream %d: %q, want %q", id, got[id], w)
		}
	}
	if m := tp.metricsText(t); !strings.Contains(m, `reason="bad_request"} 2`) {
		t.Errorf("two malformed requests not counted as bad_request:\n%s", m)
	}
}
