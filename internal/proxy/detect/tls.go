package detect

import "encoding/binary"

const (
	recordTypeHandshake    = 0x16
	handshakeClientHello   = 0x01
	extensionServerName    = 0x0000
	extensionALPN          = 0x0010
	serverNameTypeHostName = 0x00
	// maxALPN bounds how many protocol names are read from one hello.
	maxALPN = 8
)

// classifyTLS recognises a TLS record carrying a ClientHello (RFC 8446
// section 5.1 and 4.1.2) and reads its server name. A record that looks
// like TLS but cannot be parsed is still TLS, without a name: the bytes are
// passed through either way, and the server is the one to reject them.
func classifyTLS(b []byte) (Protocol, string, bool) {
	if len(b) < 5 {
		if len(b) >= 2 && b[1] != 3 {
			return TCP, "", true
		}
		return TCP, "", false
	}
	if b[1] != 3 || b[2] > 4 {
		return TCP, "", true
	}
	recLen := int(binary.BigEndian.Uint16(b[3:5]))
	if recLen == 0 || recLen > 16384+2048 {
		return TCP, "", true
	}
	if len(b) < 6 {
		return TCP, "", false
	}
	if b[5] != handshakeClientHello {
		return TCP, "", true
	}
	if len(b) < 5+recLen {
		if 5+recLen > MaxPeek {
			// The record is larger than we read; the name stays unknown.
			return TLS, "", len(b) == MaxPeek
		}
		return TLS, "", false
	}
	return TLS, serverName(b[5 : 5+recLen]), true
}

// helloExtension returns the body of the extension typ of a ClientHello
// handshake message, or false when there is none or the message is
// malformed.
func helloExtension(h []byte, typ uint16) (reader, bool) {
	r := reader(h)
	if t, ok := r.u8(); !ok || t != handshakeClientHello {
		return nil, false
	}
	if _, ok := r.u24(); !ok { // length; the record may hold more
		return nil, false
	}
	if !r.skip(2 + 32) { // legacy_version, random
		return nil, false
	}
	if !r.skipVec8() || !r.skipVec16() || !r.skipVec8() { // session id, cipher suites, compression
		return nil, false
	}
	extLen, ok := r.u16()
	if !ok {
		return nil, false
	}
	exts, ok := r.take(int(extLen))
	if !ok {
		return nil, false
	}
	for len(exts) > 0 {
		t, ok1 := exts.u16()
		n, ok2 := exts.u16()
		body, ok3 := exts.take(int(n))
		if !ok1 || !ok2 || !ok3 {
			return nil, false
		}
		if t == typ {
			return body, true
		}
	}
	return nil, false
}

// alpn returns the protocol names of the ALPN extension of a ClientHello
// handshake message (RFC 7301 section 3.1), at most maxALPN of them, or
// nil when there is none or the message is malformed.
func alpn(h []byte) []string {
	body, ok := helloExtension(h, extensionALPN)
	if !ok {
		return nil
	}
	listLen, ok1 := body.u16()
	list, ok2 := body.take(int(listLen))
	if !ok1 || !ok2 {
		return nil
	}
	var out []string
	for len(list) > 0 && len(out) < maxALPN {
		n, ok1 := list.u8()
		name, ok2 := list.take(int(n))
		if !ok1 || !ok2 || n == 0 {
			return nil
		}
		out = append(out, string(name))
	}
	return out
}

// serverName returns the host name of the server_name extension of a
// ClientHello handshake message (RFC 6066 section 3), or "" when there is
// none or the message is malformed.
func serverName(h []byte) string {
	body, ok := helloExtension(h, extensionServerName)
	if !ok {
		return ""
	}
	listLen, ok1 := body.u16()
	list, ok2 := body.take(int(listLen))
	if !ok1 || !ok2 {
		return ""
	}
	for len(list) > 0 {
		nameType, ok1 := list.u8()
		nameLen, ok2 := list.u16()
		name, ok3 := list.take(int(nameLen))
		if !ok1 || !ok2 || !ok3 {
			return ""
		}
		if nameType == serverNameTypeHostName && validHostName(name) {
			return string(name)
		}
	}
	return ""
}

// validHostName keeps names that are safe to put in logs and labels.
func validHostName(b []byte) bool {
	if len(b) == 0 || len(b) > 253 {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// reader consumes a byte slice front to back; every method reports whether
// there were enough bytes.
type reader []byte

func (r *reader) take(n int) (reader, bool) {
	if n < 0 || len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) skip(n int) bool { _, ok := r.take(n); return ok }

func (r *reader) u8() (uint8, bool) {
	v, ok := r.take(1)
	if !ok {
		return 0, false
	}
	return v[0], true
}

func (r *reader) u16() (uint16, bool) {
	v, ok := r.take(2)
	if !ok {
		return 0, false
	}
	return binary.BigEndian.Uint16(v), true
}

func (r *reader) u24() (uint32, bool) {
	v, ok := r.take(3)
	if !ok {
		return 0, false
	}
	return uint32(v[0])<<16 | uint32(v[1])<<8 | uint32(v[2]), true
}

func (r *reader) skipVec8() bool {
	n, ok := r.u8()
	return ok && r.skip(int(n))
}

func (r *reader) skipVec16() bool {
	n, ok := r.u16()
	return ok && r.skip(int(n))
}
