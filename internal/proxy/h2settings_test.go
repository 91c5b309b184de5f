package proxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func TestSettingsDedup(t *testing.T) {
	var in bytes.Buffer
	in.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&in, nil)
	fr.WriteSettings(
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 200},
	)
	fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	fr.WriteSettingsAck()
	fr.WriteData(1, true, bytes.Repeat([]byte("d"), 40000))

	client, server := net.Pipe()
	go func() {
		// Dribble the bytes to cross every boundary.
		b := in.Bytes()
		for len(b) > 0 {
			n := min(7, len(b))
			client.Write(b[:n])
			b = b[n:]
		}
		client.Close()
	}()
	out, err := io.ReadAll(newSettingsDedup(server, 1<<16, nil))
	if err != nil {
		t.Fatal(err)
	}
	if string(out[:24]) != http2.ClientPreface {
		t.Fatal("preface changed")
	}
	rd := http2.NewFramer(nil, bytes.NewReader(out[24:]))
	rd.SetMaxReadFrameSize(1 << 20)
	f, err := rd.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf := f.(*http2.SettingsFrame)
	if sf.HasDuplicates() || sf.NumSettings() != 2 {
		t.Fatalf("settings %v", sf)
	}
	if v, _ := sf.Value(http2.SettingInitialWindowSize); v != 200 {
		t.Errorf("initial window %d, want the last value 200", v)
	}
	for _, want := range []string{"*http2.PingFrame", "*http2.SettingsFrame", "*http2.DataFrame"} {
		f, err := rd.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if got := typeName(f); got != want {
			t.Errorf("frame %s, want %s", got, want)
		}
		if df, ok := f.(*http2.DataFrame); ok && len(df.Data()) != 40000 {
			t.Errorf("data %d bytes", len(df.Data()))
		}
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *http2.PingFrame:
		return "*http2.PingFrame"
	case *http2.SettingsFrame:
		return "*http2.SettingsFrame"
	case *http2.DataFrame:
		return "*http2.DataFrame"
	}
	return "other"
}

func dedupAll(in []byte) []byte {
	out, _ := filterAll(in)
	return out
}

// filterAll runs in through the filter and counts the requests it marked
// malformed.
func filterAll(in []byte) (out []byte, marked int) {
	d := newSettingsDedup(nil, 1<<16, func() { marked++ })
	d.process(in)
	return d.out, marked
}

// FuzzSettingsDedup feeds arbitrary byte streams through the filter: it
// grows the stream only by the frames that mark malformed requests, and
// filtering twice changes nothing more than filtering once (a marked
// request is marked again, as its fields are still there).
func FuzzSettingsDedup(f *testing.F) {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings(http2.Setting{ID: 4, Val: 1}, http2.Setting{ID: 4, Val: 2})
	fr.WriteData(1, false, []byte("abc"))
	f.Add(b.Bytes())
	f.Add([]byte(http2.ClientPreface + "\x00\x00\x06\x04\x00\x00\x00\x00\x00"))
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "GET"}, {":path", "/"}, {"connection", "close"}} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	b.Reset()
	b.WriteString(http2.ClientPreface)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true})
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		once, marked := filterAll(in)
		if grown := len(headerCheckMark) + 9; len(once) > len(in)+marked*grown {
			t.Fatalf("stream grew from %d to %d bytes with %d requests marked", len(in), len(once), marked)
		}
		if marked == 0 {
			if twice := dedupAll(once); !bytes.Equal(twice, once) {
				t.Fatalf("not idempotent")
			}
		}
	})
}

// largeSettings is a 16 KiB SETTINGS payload: 2,730 parameters, the first
// half distinct and the second half repeating them with new values.
func largeSettings() []byte {
	const n = (16 << 10) / 6
	p := make([]byte, 0, n*6)
	for i := range n {
		id := uint16(i % (n / 2))
		p = binary.BigEndian.AppendUint16(p, id+10)
		p = binary.BigEndian.AppendUint32(p, uint32(i))
	}
	return p
}

// A frame of the largest size the filter rewrites keeps each parameter's
// last value, in the order of the last occurrences, as the pairwise
// definition says.
func TestSettingsDedupLargeFrame(t *testing.T) {
	p := largeSettings()
	d := newSettingsDedup(nil, 1<<16, nil)
	d.setting, d.setLen = append([]byte(nil), p...), len(p)
	d.emitSettings()
	got := d.out[9:]
	var want []byte
	for i := 0; i < len(p); i += 6 {
		later := false
		for j := i + 6; j < len(p); j += 6 {
			if binary.BigEndian.Uint16(p[j:]) == binary.BigEndian.Uint16(p[i:]) {
				later = true
				break
			}
		}
		if !later {
			want = append(want, p[i:i+6]...)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("deduplicated %d bytes, want %d; first difference at %d", len(got), len(want), mismatch(got, want))
	}
}

func mismatch(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func BenchmarkSettingsDedupLargeFrame(b *testing.B) {
	p := largeSettings()
	d := newSettingsDedup(nil, 1<<16, nil)
	for b.Loop() {
		d.setting, d.setLen = append(d.setting[:0], p...), len(p)
		d.out = d.out[:0]
		d.emitSettings()
	}
}
