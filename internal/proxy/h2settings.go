package proxy

import (
	"encoding/binary"
	"net"
)

// settingsDedup sits on the client-to-proxy side of an HTTP/2 connection
// and rewrites every SETTINGS frame that names a parameter more than once
// so that it names each parameter once, with its last value. RFC 9113
// section 6.5.3 says the values of one frame are applied in order, so the
// last one wins and the result is the same; the Go HTTP/2 server instead
// refuses such a frame as a flood and closes the connection (h2spec
// 6.5.3/1). Every other byte passes through unchanged.
type settingsDedup struct {
	net.Conn
	preface int // preface bytes still to pass through

	hdr     [9]byte
	hdrLen  int
	payload int    // bytes of the current non-SETTINGS frame still to pass
	setting []byte // payload of the SETTINGS frame being collected
	setLen  int    // its declared length

	raw [16 << 10]byte
	out []byte // processed bytes not yet returned
}

const (
	frameSettings = 0x4
	flagAck       = 0x1
	// maxSettingsRewrite bounds the SETTINGS frames the filter rewrites;
	// larger ones pass unchanged (and the server refuses them).
	maxSettingsRewrite = 16 << 10
)

func newSettingsDedup(c net.Conn) *settingsDedup {
	return &settingsDedup{Conn: c, preface: 24}
}

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
				d.emitSettings()
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
