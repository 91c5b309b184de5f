package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// hopByHop are the fields that describe one connection rather than the
// message (RFC 9110 section 7.6.1), and so are never forwarded.
// Proxy-Connection is not standard but still sent by old clients.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Te", "Transfer-Encoding", "Upgrade"}

// removeHopByHop deletes the hop-by-hop fields and every field the
// Connection header names. "TE: trailers" is kept: it tells a gRPC server
// that the client understands trailers, end to end.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if name = textproto.TrimString(name); name != "" && !asciiEqualFold(name, "te") {
				h.Del(name)
			}
		}
	}
	trailers := false
	for _, v := range h["Te"] {
		if strings.Contains(strings.ToLower(v), "trailers") {
			trailers = true
		}
	}
	for _, k := range hopByHop {
		if _, ok := h[k]; ok {
			delete(h, k)
		}
	}
	if trailers {
		h["Te"] = []string{"trailers"}
	}
}

// upgradeType returns the protocol a request asks to switch to, or "".
func upgradeType(h http.Header) string {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			if asciiEqualFold(textproto.TrimString(name), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}
