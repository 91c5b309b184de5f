package discovery

import (
	"crypto/tls"
	"io"
	"net"

	"github.com/meshctl/mesh/internal/proxy/identity"
)

func tlsListen(server *identity.Identity) (net.Listener, error) {
	return tls.Listen("tcp", "127.0.0.1:0", server.ServerConfig())
}

func tlsDial(addr string, cfg *tls.Config) error {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = io.ReadFull(conn, make([]byte, 1))
	return err
}
