package proxy

import (
	"strings"

	"golang.org/x/net/http2/hpack"
)

// headerCheckMark is a header block fragment holding one field, "X: ",
// as a literal that is not indexed (RFC 7541 section 6.2.2): appended to
// a request's block it leaves both HPACK tables as they were, and the Go
// server's parser refuses its upper-case name, which makes the request
// malformed and gets the stream reset with PROTOCOL_ERROR.
var headerCheckMark = []byte{0x00, 0x01, 'X', 0x00}

// headerCheck decodes the client's header blocks alongside the Go HTTP/2
// server and finds the requests that RFC 9113 section 8.2.2 calls
// malformed but the server answers with 400: a connection-specific field
// (connection, keep-alive, proxy-connection, transfer-encoding, upgrade)
// or a TE other than "trailers". The server makes the same checks after
// decoding, too late to reset the stream. Decoding every block twice is
// the cost; a request's header block is small next to its forwarding.
//
// It also counts, with onTooLarge, the request header blocks the server
// refuses for their size, mirroring the server's accounting (RFC 7541
// field sizes against maxString, its header list limit): the server
// answers 431 itself when a block ends past the limit, and ends the
// connection (GOAWAY) when more of the block follows, or when one string
// is longer than the limit (COMPRESSION_ERROR).
type headerCheck struct {
	maxString   uint32
	onMalformed func()
	onTooLarge  func()

	dec       *hpack.Decoder // nil until the first block
	broken    bool           // decoding failed: the server ends the connection
	maxStream uint32         // highest stream a request opened
	request   bool           // the block being read opens a stream
	bad       bool           // ... and is malformed
	te        int            // TE fields in it
	remain    uint32         // the server's budget for its fields
	trRemain  uint32         // ... and for its "trailer" fields
	tooLarge  bool           // the block went past the budget
}

func (c *headerCheck) tracking() bool { return !c.broken }

// stop gives up on the connection: the server is ending it.
func (c *headerCheck) stop() { c.broken = true }

// begin starts a header block on stream: a request's if the stream is new,
// else trailers, which the server does not check.
func (c *headerCheck) begin(stream uint32) {
	c.request = stream > c.maxStream
	if c.request {
		c.maxStream = stream
	}
	c.bad, c.te = false, 0
	c.remain, c.trRemain, c.tooLarge = c.maxString, c.maxString, false
}

// refuseLarge counts a request block the server refuses for its size,
// once.
func (c *headerCheck) refuseLarge() {
	if c.request && !c.tooLarge {
		c.tooLarge = true
		if c.onTooLarge != nil {
			c.onTooLarge()
		}
	}
}

func (c *headerCheck) read(frag []byte) {
	if c.broken {
		return
	}
	if c.dec == nil {
		// The table size the Go server announces (its default).
		c.dec = hpack.NewDecoder(4096, c.field)
		c.dec.SetMaxStringLength(int(c.maxString))
	}
	// The server's guard against decoding what it would drop: a
	// fragment more than twice the budget left ends the connection.
	if c.request && int64(len(frag)) > 2*int64(c.remain+c.trRemain) {
		c.refuseLarge()
		c.broken = true
		return
	}
	if _, err := c.dec.Write(frag); err != nil {
		if err == hpack.ErrStringLength {
			c.refuseLarge()
		}
		c.broken = true
	}
}

func (c *headerCheck) field(f hpack.HeaderField) {
	if !c.request {
		return
	}
	budget, size := &c.remain, f.Size()
	if f.Name == "trailer" {
		n := uint32(strings.Count(f.Value, ",") + 1)
		budget, size = &c.trRemain, uint32(len(f.Value))-n+1+n*32
	}
	if size > *budget {
		c.refuseLarge()
		c.remain, c.trRemain = 0, 0
	} else {
		*budget -= size
	}
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		c.bad = true
	case "te":
		c.te++
		if c.te > 1 || f.Value != "trailers" && f.Value != "" {
			c.bad = true
		}
	}
}

// end finishes a header block and reports whether it is a malformed
// request.
func (c *headerCheck) end() bool {
	if c.broken || c.dec == nil {
		return false
	}
	if err := c.dec.Close(); err != nil {
		if err == hpack.ErrStringLength {
			c.refuseLarge()
		}
		c.broken = true
		return false
	}
	bad := c.request && c.bad && !c.tooLarge
	if bad && c.onMalformed != nil {
		c.onMalformed()
	}
	return bad
}
