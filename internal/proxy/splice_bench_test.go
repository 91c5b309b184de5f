package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(b testing.TB) (*net.TCPConn, *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// copyFunc copies one direction of an opaque connection until src ends,
// the way pipe does: a chunk at a time, renewing the read deadline.
type copyFunc func(dst, src *net.TCPConn)

// runtimeSplice is the copy before pipes were lent: io.CopyN between two
// TCP connections, which splices through a pipe of the Go runtime that
// is held while waiting.
func runtimeSplice(dst, src *net.TCPConn) {
	for {
		src.SetReadDeadline(time.Now().Add(time.Hour))
		if _, err := io.CopyN(dst, src, tcpChunk); err != nil {
			dst.CloseWrite()
			return
		}
	}
}

// lentSplice is the proxy's copy.
func lentSplice(dst, src *net.TCPConn) {
	for {
		src.SetReadDeadline(time.Now().Add(time.Hour))
		if _, err := splicePipes.copyTCP(dst, src, tcpChunk); err != nil {
			dst.CloseWrite()
			return
		}
	}
}

// benchJoin builds client <-> proxy <-> server out of two TCP pairs, the
// proxy's two directions copied by copy, and returns the client's and the
// server's ends.
func benchJoin(b *testing.B, copy copyFunc) (client, server *net.TCPConn) {
	client, down := tcpPair(b)
	up, server := tcpPair(b)
	go copy(up, down)
	go copy(down, up)
	return client, server
}

var opaqueCopies = []struct {
	name string
	copy copyFunc
}{{"runtime", runtimeSplice}, {"lent", lentSplice}}

// BenchmarkOpaqueStream is bulk throughput one way through the proxy's
// copies: "runtime" is the copy before pipes were lent (the baseline),
// "lent" the proxy's. Compare the two within one run.
func BenchmarkOpaqueStream(b *testing.B) {
	for _, c := range opaqueCopies {
		b.Run(c.name, func(b *testing.B) {
			client, server := benchJoin(b, c.copy)
			done := make(chan int64)
			go func() {
				buf := make([]byte, 256<<10)
				var n int64
				for {
					k, err := server.Read(buf)
					n += int64(k)
					if err != nil {
						done <- n
						return
					}
				}
			}()
			chunk := bytes.Repeat([]byte("y"), 64<<10)
			b.SetBytes(int64(len(chunk)))
			var sent int64
			for b.Loop() {
				if _, err := client.Write(chunk); err != nil {
					b.Fatal(err)
				}
				sent += int64(len(chunk))
			}
			client.CloseWrite()
			if got := <-done; got != sent {
				b.Fatalf("server read %d bytes of %d", got, sent)
			}
		})
	}
}

// BenchmarkOpaquePingPong is a 1 KiB request answered by 1 KiB through
// the proxy's copies, where each message is its own readiness cycle (and,
// for "lent", its own borrowed pipe).
func BenchmarkOpaquePingPong(b *testing.B) {
	for _, c := range opaqueCopies {
		b.Run(c.name, func(b *testing.B) {
			client, server := benchJoin(b, c.copy)
			go echoPlain(server)
			msg := bytes.Repeat([]byte("p"), 1024)
			got := make([]byte, len(msg))
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := client.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(client, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
