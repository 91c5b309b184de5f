package proxy

import (
	"encoding/binary"
	"net"
)

// settingsDedup sits on the client-to-proxy side of an HTTP/2 connection,
// in front of the Go HTTP/2 server, and mends two answers of that server
// that RFC 9113 does not allow:
//
//   - It rewrites every SETTINGS frame that names a parameter more than
//     once so that it names each parameter once, with its last value. RFC
//     9113 section 6.5.3 says the values of one frame are applied in
//     order, so the last one wins and the result is the same; the Go
//     server instead refuses such a frame as a flood and closes the
//     connection (h2spec 6.5.3/1).
//   - It reads every header block (a second HPACK decoder, kept in step
//     with the server's) and marks a request that carries a
//     connection-specific field or a TE other than "trailers" as malformed
//     for the server's own parser (see headerCheck), which then resets the
//     stream with PROTOCOL_ERROR as section 8.2.2 asks, where it would
//     answer 400 (h2spec 8.1.2.2/1 and /2).
//
// Every other byte passes through unchanged.
type settingsDedup struct {
	net.Conn
	preface int // preface bytes still to pass through
	headers headerCheck

	hdr     [9]byte
	hdrLen  int
	payload int    // bytes of the current non-SETTINGS frame still to pass
	setting []byte // payload of the SETTINGS or header frame being collected
	setLen  int    // its declared length

	hbuf []byte // reused for header frames, which are copied to out
	raw  [16 << 10]byte
	out  []byte // processed bytes not yet returned
}

const (
	frameHeaders      = 0x1
	frameSettings     = 0x4
	frameContinuation = 0x9
	flagAck           = 0x1
	flagEndHeaders    = 0x4
	flagPadded        = 0x8
	flagPriority      = 0x20
	// maxSettingsRewrite bounds the SETTINGS frames the filter rewrites;
	// larger ones pass unchanged (and the server refuses them).
	maxSettingsRewrite = 16 << 10
)

// newSettingsDedup filters what c reads. maxString is the longest header
// string the server decodes (its header list limit); onMalformed is called
// for each request it marks as malformed.
func newSettingsDedup(c net.Conn, maxString uint32, onMalformed func()) *settingsDedup {
	return &settingsDedup{Conn: c, preface: 24, headers: headerCheck{maxString: maxString, onMalformed: onMalformed}}
}

// onTooLarge sets what is called for each request header block the
// server refuses for its size.
func (d *settingsDedup) onTooLarge(f func()) { d.headers.onTooLarge = f }

func (d *settingsDedup) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		n, err := d.Conn.Read(d.raw[:])
		d.process(d.raw[:n])
		if len(d.out) > 0 {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	if len(d.out) == 0 {
		d.out = d.out[:0:0]
	}
	return n, nil
}

func (d *settingsDedup) process(b []byte) {
	for len(b) > 0 {
		switch {
		case d.preface > 0:
			n := min(d.preface, len(b))
			d.out = append(d.out, b[:n]...)
			d.preface -= n
			b = b[n:]
		case d.payload > 0:
			n := min(d.payload, len(b))
			d.out = append(d.out, b[:n]...)
			d.payload -= n
			b = b[n:]
		case d.setting != nil:
			n := min(d.setLen-len(d.setting), len(b))
			d.setting = append(d.setting, b[:n]...)
			b = b[n:]
			if len(d.setting) == d.setLen {
				if d.hdr[3] == frameSettings {
					d.emitSettings()
				} else {
					d.emitHeaders()
				}
			}
		default:
			n := copy(d.hdr[d.hdrLen:], b)
			d.hdrLen += n
			b = b[n:]
			if d.hdrLen < len(d.hdr) {
				return
			}
			d.hdrLen = 0
			length := int(d.hdr[0])<<16 | int(d.hdr[1])<<8 | int(d.hdr[2])
			if d.hdr[3] == frameSettings && d.hdr[4]&flagAck == 0 && length%6 == 0 && length > 0 && length <= maxSettingsRewrite {
				d.setLen = length
				d.setting = make([]byte, 0, length)
				continue
			}
			if (d.hdr[3] == frameHeaders || d.hdr[3] == frameContinuation) && d.headers.tracking() {
				if length > maxSettingsRewrite {
					// Larger than the server reads: it ends the connection.
					d.headers.stop()
				} else {
					d.setLen = length
					if cap(d.hbuf) < length {
						d.hbuf = make([]byte, 0, length)
					}
					d.setting = d.hbuf[:0]
					if length == 0 {
						d.emitHeaders()
					}
					continue
				}
			}
			d.out = append(d.out, d.hdr[:]...)
			d.payload = length
		}
	}
}

// emitSettings writes the collected SETTINGS frame with each parameter
// once, at the place of its last occurrence. It walks the frame from the
// end, keeping the first occurrence of each identifier it meets, so its
// cost is linear in the frame (a 16 KiB frame of 2,730 distinct
// identifiers, compared pairwise, cost milliseconds of CPU).
func (d *settingsDedup) emitSettings() {
	s := d.setting
	d.setting = nil
	n := len(s) / 6
	var seen [1 << 16 / 64]uint64 // one bit per identifier
	kept := make([]byte, 0, len(s))
	for i := n - 1; i >= 0; i-- {
		id := binary.BigEndian.Uint16(s[i*6:])
		if seen[id/64]&(1<<(id%64)) != 0 {
			continue
		}
		seen[id/64] |= 1 << (id % 64)
		kept = append(kept, s[i*6:i*6+6]...)
	}
	// Back to the frame's order.
	for i, j := 0, len(kept)-6; i < j; i, j = i+6, j-6 {
		var tmp [6]byte
		copy(tmp[:], kept[i:i+6])
		copy(kept[i:i+6], kept[j:j+6])
		copy(kept[j:j+6], tmp[:])
	}
	h := d.hdr
	h[0], h[1], h[2] = byte(len(kept)>>16), byte(len(kept)>>8), byte(len(kept))
	d.out = append(d.out, h[:]...)
	d.out = append(d.out, kept...)
}

// emitHeaders passes on the collected HEADERS or CONTINUATION frame after
// reading its part of the header block. When the frame ends a request's
// block and the request is malformed, it passes the frame on without
// END_HEADERS, followed by a CONTINUATION frame that ends the block with
// one field the server's parser refuses (see headerCheck.mark).
func (d *settingsDedup) emitHeaders() {
	p := d.setting
	d.setting = nil
	h := d.hdr
	stream := binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)
	frag, ok := p, true
	if h[3] == frameHeaders {
		frag, ok = headerFragment(h[4], p)
		d.headers.begin(stream)
	}
	if ok {
		d.headers.read(frag)
	} else {
		d.headers.stop()
	}
	if h[4]&flagEndHeaders == 0 || !d.headers.end() {
		d.out = append(d.out, h[:]...)
		d.out = append(d.out, p...)
		return
	}
	h[4] &^= flagEndHeaders
	d.out = append(d.out, h[:]...)
	d.out = append(d.out, p...)
	mark := headerCheckMark
	c := [9]byte{0, 0, byte(len(mark)), frameContinuation, flagEndHeaders}
	binary.BigEndian.PutUint32(c[5:], stream)
	d.out = append(d.out, c[:]...)
	d.out = append(d.out, mark...)
}

// headerFragment is the header block fragment of a HEADERS frame's
// payload, without padding and priority.
func headerFragment(flags byte, p []byte) ([]byte, bool) {
	pad := 0
	if flags&flagPadded != 0 {
		if len(p) < 1 {
			return nil, false
		}
		pad, p = int(p[0]), p[1:]
	}
	if flags&flagPriority != 0 {
		if len(p) < 5 {
			return nil, false
		}
		p = p[5:]
	}
	if pad > len(p) {
		return nil, false
	}
	return p[:len(p)-pad], true
}
