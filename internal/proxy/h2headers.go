package proxy

import "golang.org/x/net/http2/hpack"

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
type headerCheck struct {
	maxString   uint32
	onMalformed func()

	dec       *hpack.Decoder // nil until the first block
	broken    bool           // decoding failed: the server ends the connection
	maxStream uint32         // highest stream a request opened
	request   bool           // the block being read opens a stream
	bad       bool           // ... and is malformed
	te        int            // TE fields in it
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
	if _, err := c.dec.Write(frag); err != nil {
		c.broken = true
	}
}

func (c *headerCheck) field(f hpack.HeaderField) {
	if !c.request {
		return
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
		c.broken = true
		return false
	}
	bad := c.request && c.bad
	if bad && c.onMalformed != nil {
		c.onMalformed()
	}
	return bad
}
