package realnode

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// capture records the TCP payloads of IPv4 packets seen on every interface
// of the host (an AF_PACKET socket, as tcpdump -i any uses), keeping those
// whose addresses satisfy keep. On the node, traffic between pods crosses
// their veths, so it sees every byte pods send each other.
type capture struct {
	fd   int
	keep func(src, dst netip.Addr) bool
	quit atomic.Bool
	done chan struct{}
	once sync.Once

	mu   sync.Mutex
	segs []segment
}

// segment is one TCP packet's payload.
type segment struct {
	src, dst netip.AddrPort
	payload  []byte
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func startCapture(keep func(src, dst netip.Addr) bool) (*capture, error) {
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		return nil, err
	}
	// A read timeout lets stop end the loop.
	tv := syscall.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	c := &capture{fd: fd, keep: keep, done: make(chan struct{})}
	go c.loop()
	return c, nil
}

func (c *capture) loop() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for !c.quit.Load() {
		n, _, err := syscall.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		c.packet(buf[:n])
	}
}

// packet parses an Ethernet frame carrying IPv4 and TCP.
func (c *capture) packet(f []byte) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || ip[9] != syscall.IPPROTO_TCP || ihl < 20 || total > len(ip) || total < ihl+20 {
		return
	}
	src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
	if !c.keep(src, dst) {
		return
	}
	tcp := ip[ihl:total]
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) || off == len(tcp) {
		return
	}
	s := segment{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:2])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:4])),
		payload: append([]byte(nil), tcp[off:]...),
	}
	c.mu.Lock()
	c.segs = append(c.segs, s)
	c.mu.Unlock()
}

// stop ends the capture and returns the segments, in the order seen. It
// may be called again.
func (c *capture) stop() []segment {
	c.once.Do(func() {
		c.quit.Store(true)
		<-c.done
		syscall.Close(c.fd)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.segs
}
