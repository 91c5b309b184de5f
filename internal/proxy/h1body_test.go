package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"strings"
	"testing"
	"testing/iotest"
)

// collectConn is the net.Conn an h1out writes to in these tests: it keeps
// what is written. h1out calls nothing else of it when its timeout is 0.
type collectConn struct {
	net.Conn
	buf bytes.Buffer
	// err, when set, fails every write.
	err error
}

func (c *collectConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	return c.buf.Write(p)
}

// relayResult is the outcome of one relay run.
type relayResult struct {
	ok   bool
	out  []byte // what reached the other side
	rest []byte // what the reader had left after the body: the next message
	n    int64
	err  error // the relay's read error
}

// runRelay relays one body from src (as the bytes after a head) and
// returns what was written and what was left to read.
func runRelay(src io.Reader, kind bodyKind, length int64, chunked bool, maxTrailer int) relayResult {
	in := newH1In(src)
	defer in.release()
	c := &collectConn{}
	out := newH1Out(c, 0)
	defer out.release()
	r := relay{in: in, out: out, guard: newStoppedGuard(0, 0, func() {}), maxTrailer: maxTrailer}
	ok := r.run(kind, length, chunked)
	rest := append([]byte(nil), in.buffered()...)
	more, _ := io.ReadAll(src)
	return relayResult{ok: ok, out: c.buf.Bytes(), rest: append(rest, more...), n: r.n, err: r.readErr}
}

// readers are the ways a body's bytes may arrive: whole, a byte at a time
// (every line and chunk split across reads), or in halves.
var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"one byte at a time", iotest.OneByteReader},
	{"half", iotest.HalfReader},
}

func TestRelay(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1000) // beyond the buffers
	for _, tc := range []struct {
		name    string
		kind    bodyKind
		length  int64
		chunked bool
		in      string
		out     string // for until close as chunks: the body, de-chunked
		rest    string
		err     error // nil: the relay succeeds
	}{
		{name: "length", kind: bodyLength, length: 5, in: "hello world", out: "hello", rest: " world"},
		{name: "length 0", kind: bodyLength, length: 0, in: "GET", out: "", rest: "GET"},
		{name: "length beyond the buffers", kind: bodyLength, length: int64(len(big)), in: big + "next", out: big, rest: "next"},
		{name: "length cut", kind: bodyLength, length: 5, in: "hel", err: io.ErrUnexpectedEOF},
		{name: "no body", kind: bodyNone, in: "next", out: "", rest: "next"},

		{name: "chunks de-chunked", kind: bodyChunked, chunked: false,
			in:  "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT",
			out: "hello world", rest: "NEXT"},
		{name: "chunks normalised", kind: bodyChunked, chunked: true,
			in:  "5\r\nhello\r\n6 ; ext=\"q\" ; b\r\n world\r\n0;last\r\n\r\nNEXT",
			out: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", rest: "NEXT"},
		{name: "upper-case and padded sizes", kind: bodyChunked, chunked: true,
			in:  "00A\r\n0123456789\r\n000\r\n\r\n",
			out: "a\r\n0123456789\r\n0\r\n\r\n"},
		{name: "trailers kept", kind: bodyChunked, chunked: true,
			in:  "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B:  2 \r\n\r\nNEXT",
			out: "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B:  2 \r\n\r\n", rest: "NEXT"},
		{name: "trailers dropped when de-chunked", kind: bodyChunked, chunked: false,
			in:  "3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\nNEXT",
			out: "abc", rest: "NEXT"},
		{name: "large chunk", kind: bodyChunked, chunked: true,
			in:  "3e80\r\n" + big + "\r\n0\r\n\r\n",
			out: "3e80\r\n" + big + "\r\n0\r\n\r\n"},
		{name: "empty chunked body", kind: bodyChunked, chunked: true, in: "0\r\n\r\n", out: "0\r\n\r\n"},

		{name: "bad chunk size", kind: bodyChunked, in: "zz\r\n", err: errBadChunk},
		{name: "empty chunk size", kind: bodyChunked, in: "\r\nabc\r\n", err: errBadChunk},
		{name: "chunk size with a sign", kind: bodyChunked, in: "+5\r\nhello\r\n0\r\n\r\n", err: errBadChunk},
		{name: "chunk size of 16 digits", kind: bodyChunked, in: "0000000000000005\r\nhello\r\n0\r\n\r\n", err: errBadChunk},
		{name: "chunk size followed by junk", kind: bodyChunked, in: "5 x\r\nhello\r\n0\r\n\r\n", err: errBadChunk},
		{name: "control byte in an extension", kind: bodyChunked, in: "5;a\x00\r\nhello\r\n0\r\n\r\n", err: errBadChunk},
		{name: "chunk longer than its size", kind: bodyChunked, in: "5\r\nhelloX\r\n0\r\n\r\n", err: errBadChunk},
		{name: "CR CR LF after a chunk", kind: bodyChunked, in: "5\r\nhello\r\r\n0\r\n\r\n", err: errBadChunk},
		{name: "chunk line longer than the buffer", kind: bodyChunked, in: "5;" + strings.Repeat("e", h1BufSize) + "\r\nhello\r\n0\r\n\r\n", err: errBadChunk},
		// RFC 9112 section 7.1 (and erratum 7633): chunk lines end in
		// CRLF. A bare LF there is read differently by other parsers
		// (net/http refuses it), which a smuggler can use.
		{name: "bare LF after a chunk size", kind: bodyChunked, in: "5\nhello\r\n0\r\n\r\n", err: errBadChunk},
		{name: "bare LF after chunk data", kind: bodyChunked, in: "5\r\nhello\n0\r\n\r\n", err: errBadChunk},
		{name: "bare LF after the last chunk", kind: bodyChunked, in: "5\r\nhello\r\n0\n\r\n", err: errBadChunk},
		{name: "bare LF ending the trailers", kind: bodyChunked, in: "5\r\nhello\r\n0\r\n\n", err: errBadChunk},
		{name: "bad trailer line", kind: bodyChunked, in: "0\r\nno colon\r\n\r\n", err: errBadChunk},
		{name: "folded trailer line", kind: bodyChunked, in: "0\r\nX-A: 1\r\n 2\r\n\r\n", err: errBadChunk},
		{name: "trailers too large", kind: bodyChunked, in: "0\r\nX-A: " + strings.Repeat("a", 200) + "\r\n\r\n", err: errBadChunk},
		{name: "cut in a chunk", kind: bodyChunked, in: "5\r\nhel", err: io.ErrUnexpectedEOF},
		{name: "cut in a chunk line", kind: bodyChunked, in: "5\r\nhello\r\n1", err: io.ErrUnexpectedEOF},
		{name: "cut before the trailers end", kind: bodyChunked, in: "5\r\nhello\r\n0\r\n", err: io.ErrUnexpectedEOF},

		{name: "until close", kind: bodyUntilClose, in: "all of it", out: "all of it"},
		{name: "until close as chunks", kind: bodyUntilClose, chunked: true, in: big, out: big},
		{name: "until close, empty, as chunks", kind: bodyUntilClose, chunked: true, in: "", out: ""},
	} {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				res := runRelay(rd.wrap(strings.NewReader(tc.in)), tc.kind, tc.length, tc.chunked, 100)
				if tc.err != nil {
					if res.ok || !errors.Is(res.err, tc.err) {
						t.Fatalf("%q: ok %v, error %v; want %v", tc.in, res.ok, res.err, tc.err)
					}
					return
				}
				if !res.ok {
					t.Fatalf("%q: failed: %v", tc.in, res.err)
				}
				out := res.out
				if tc.kind == bodyUntilClose && tc.chunked {
					// The chunks follow the reads: compare their content.
					var err error
					if out, err = io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(res.out))); err != nil {
						t.Fatalf("chunks %q: %v", res.out, err)
					}
					if !bytes.HasSuffix(res.out, []byte("0\r\n\r\n")) {
						t.Errorf("chunks %q do not end with the last chunk", res.out)
					}
				}
				if string(out) != tc.out {
					t.Errorf("%q: relayed %q, want %q", tc.in, out, tc.out)
				}
				if string(res.rest) != tc.rest {
					t.Errorf("%q: left %q, want %q", tc.in, res.rest, tc.rest)
				}
				plain := tc.out
				if tc.kind == bodyChunked && tc.chunked {
					b, _ := io.ReadAll(httputil.NewChunkedReader(strings.NewReader(tc.out)))
					plain = string(b)
				}
				if res.n != int64(len(plain)) {
					t.Errorf("counted %d body bytes, want %d", res.n, len(plain))
				}
			})
		}
	}
}

// TestRelayWriteError: a receiver that fails is the relay's write error,
// not its read error, and stops it.
func TestRelayWriteError(t *testing.T) {
	broken := errors.New("broken pipe")
	for _, tc := range []struct {
		name   string
		kind   bodyKind
		length int64
		in     string
	}{
		{"length", bodyLength, 3, "abc"},
		{"chunked", bodyChunked, 0, "3\r\nabc\r\n0\r\n\r\n"},
		{"until close", bodyUntilClose, 0, "abc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := newH1In(strings.NewReader(tc.in))
			defer in.release()
			out := newH1Out(&collectConn{err: broken}, 0)
			defer out.release()
			r := relay{in: in, out: out, guard: newStoppedGuard(0, 0, func() {}), maxTrailer: 100}
			if r.run(tc.kind, tc.length, true) {
				t.Fatal("relay to a broken receiver succeeded")
			}
			if r.writeErr != broken || r.readErr != nil {
				t.Errorf("write error %v, read error %v; want %v and none", r.writeErr, r.readErr, broken)
			}
		})
	}
}

// TestRelayFlushesBeforeWaiting: what the relay has gathered reaches the
// receiver before the relay waits for more, so that a body that trickles
// is not held back.
func TestRelayFlushesBeforeWaiting(t *testing.T) {
	c := &collectConn{}
	out := newH1Out(c, 0)
	defer out.release()
	var seen []string
	src := readFunc(func(p []byte) (int, error) {
		seen = append(seen, c.buf.String())
		switch len(seen) {
		case 1:
			return copy(p, "3\r\nabc\r\n"), nil
		case 2:
			return copy(p, "0\r\n\r\n"), nil
		}
		return 0, io.EOF
	})
	in := newH1In(src)
	defer in.release()
	r := relay{in: in, out: out, guard: newStoppedGuard(0, 0, func() {}), maxTrailer: 100}
	if !r.run(bodyChunked, 0, true) {
		t.Fatal(r.readErr, r.writeErr)
	}
	if len(seen) != 2 || seen[1] != "3\r\nabc\r\n" {
		t.Errorf("written before each read: %q, want the first chunk before the second read", seen)
	}
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

func TestRelayParseChunkSize(t *testing.T) {
	for _, tc := range []struct {
		l  string
		n  int64
		ok bool
	}{
		{"0", 0, true},
		{"a", 10, true},
		{"FF", 255, true},
		{"00ff", 255, true},
		{"5;ext", 5, true},
		{"5;a=b;c=\"d e\"", 5, true},
		{"5 ; ext", 5, true},
		{"5\t", 5, true},
		{"5 ", 5, true},
		{"fffffffffffffff", 1<<60 - 1, true},
		{"1000000000000000", 0, false}, // 16 digits
		{"", 0, false},
		{";ext", 0, false},
		{" 5", 0, false},
		{"5x", 0, false},
		{"5 x", 0, false},
		{"0x5", 0, false},
		{"-5", 0, false},
		{"+5", 0, false},
		{"5\x00", 0, false},
		{"5;\x7f", 0, false},
		{"5\r", 0, false},
	} {
		n, ok := parseChunkSize([]byte(tc.l))
		if ok != tc.ok || ok && n != tc.n {
			t.Errorf("parseChunkSize(%q) = %d, %v; want %d, %v", tc.l, n, ok, tc.n, tc.ok)
		}
	}
}

func TestRelayAppendHex(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0"}, {9, "9"}, {10, "a"}, {255, "ff"}, {4096, "1000"}, {1<<60 - 1, "fffffffffffffff"},
	} {
		if got := string(appendHex([]byte("x"), tc.n)); got != "x"+tc.want {
			t.Errorf("appendHex(%d) = %q, want %q", tc.n, got, "x"+tc.want)
		}
		if n, ok := parseChunkSize([]byte(tc.want)); !ok || n != tc.n {
			t.Errorf("parseChunkSize(appendHex(%d)) = %d, %v", tc.n, n, ok)
		}
	}
}
