package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// BenchmarkTCPPingPong is a 1 KiB message echoed back through one opaque
// connection of the proxy: per message, each direction wakes, borrows a
// pipe, splices and gives it back. BenchmarkTCPSplice is the bulk case.
func BenchmarkTCPPingPong(b *testing.B) {
	backend := listenTCP(b, func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	})
	_, port, _ := net.SplitHostPort(backend)
	tp := startProxy(b, "outbound: {address: \"127.0.0.1:0\", opaquePorts: ["+port+"]}\n", fixedDst(backend))
	c, err := net.Dial("tcp", tp.outbound)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("p"), 1024)
	got := make([]byte, len(msg))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
}
