//go:build !linux

package proxy

import (
	"io"
	"net"
	"time"
)

// pipePool has no pipes off Linux: copies go through io.Copy.
type pipePool struct {
	ttl time.Duration
	max int
}

func (pp *pipePool) setMax(int)              {}
func (pp *pipePool) stats() (open, idle int) { return 0, 0 }

func (pp *pipePool) copyTCP(dst, src *net.TCPConn, max int64) (int64, error) {
	n, err := io.CopyN(dst, src, max)
	if err == nil && n < max {
		err = io.EOF
	}
	return n, err
}

// softNofile is unknown off Linux: the defaults assume 1024.
func softNofile() uint64 { return 0 }
