package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Why the proxy splices by hand: io.Copy between two *net.TCPConn splices
// through a pipe that the Go runtime takes when the copy starts and holds
// while it waits for the next byte, so an idle opaque connection held two
// pipes (four descriptors) beside its two sockets; and the runtime keeps
// finished pipes in a sync.Pool that only the garbage collector empties,
// so they outlived their connections by minutes. copyTCP takes a pipe
// only once the source has bytes to move, gives it back as soon as they
// are out, and splicePipes closes pipes that nobody used for a second.

// pipeSize is the capacity asked for each pipe, as the Go runtime asks:
// one splice moves up to this much.
const pipeSize = 1 << 20

// splicePipe is a pipe whose read end feeds the destination socket.
type splicePipe struct {
	r, w int
	// data is how many bytes sit in the pipe: a pipe that still holds
	// some when its copy ends is closed, never reused.
	data int
	// used is when the pipe was last given back.
	used time.Time
}

func newPipe() (*splicePipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	// A smaller pipe works too, with more system calls.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize)
	return &splicePipe{r: fds[0], w: fds[1]}, nil
}

func (p *splicePipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// pipePool lends pipes to copies that have bytes to move. At most max
// pipes are open at once, idle ones included; a copy that finds none
// moves its bytes through a pooled buffer instead. Idle pipes are closed
// after ttl.
type pipePool struct {
	ttl time.Duration

	mu       sync.Mutex
	max      int
	open     int
	idle     []*splicePipe // the most recently used last
	sweeping bool
}

// get returns an empty pipe, or nil when max pipes are open or no pipe
// can be made (out of descriptors, for one).
func (pp *pipePool) get() *splicePipe {
	pp.mu.Lock()
	if n := len(pp.idle); n > 0 {
		p := pp.idle[n-1]
		pp.idle[n-1] = nil
		pp.idle = pp.idle[:n-1]
		pp.mu.Unlock()
		return p
	}
	if pp.open >= pp.max {
		pp.mu.Unlock()
		return nil
	}
	pp.open++
	pp.mu.Unlock()
	p, err := newPipe()
	if err != nil {
		pp.mu.Lock()
		pp.open--
		pp.mu.Unlock()
		return nil
	}
	return p
}

// put gives p back; a pipe that still holds bytes, or one beyond max, is
// closed.
func (pp *pipePool) put(p *splicePipe) {
	pp.mu.Lock()
	if p.data != 0 || pp.open > pp.max {
		pp.open--
		pp.mu.Unlock()
		p.close()
		return
	}
	p.used = time.Now()
	pp.idle = append(pp.idle, p)
	if !pp.sweeping {
		pp.sweeping = true
		time.AfterFunc(pp.ttl, pp.sweep)
	}
	pp.mu.Unlock()
}

// sweep closes the pipes idle for ttl, and runs again while any is left.
func (pp *pipePool) sweep() {
	cutoff := time.Now().Add(-pp.ttl)
	pp.mu.Lock()
	i := 0
	for i < len(pp.idle) && !pp.idle[i].used.After(cutoff) {
		i++
	}
	old := make([]*splicePipe, i)
	copy(old, pp.idle[:i])
	rest := copy(pp.idle, pp.idle[i:])
	clear(pp.idle[rest:])
	pp.idle = pp.idle[:rest]
	pp.open -= i
	if len(pp.idle) > 0 {
		time.AfterFunc(pp.ttl, pp.sweep)
	} else {
		pp.sweeping = false
	}
	pp.mu.Unlock()
	for _, p := range old {
		p.close()
	}
}

// setMax changes how many pipes may be open at once; pipes open beyond
// it close as they come back idle.
func (pp *pipePool) setMax(n int) {
	pp.mu.Lock()
	pp.max = n
	pp.mu.Unlock()
}

// stats returns the pipes open and, of those, idle.
func (pp *pipePool) stats() (open, idle int) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.open, len(pp.idle)
}

// copyTCP moves at most max bytes from src to dst, through a pipe of pp
// with splice(2), or through a buffer when pp has none to lend. It holds
// neither while it waits for src: an idle connection costs its sockets
// only. The buffers are copyBufs, those of HTTP/2 bodies. It returns
// io.EOF when src has ended, and the read deadline's error when it
// passes.
func (pp *pipePool) copyTCP(dst, src *net.TCPConn, max int64) (written int64, err error) {
	sr, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	dr, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	// One state per call, its callbacks bound once: a closure per read
	// would cost allocations per message.
	c := &spliceCopy{pp: pp}
	c.fill, c.drain = c.fillFD, c.drainFD
	defer func() {
		if c.p != nil {
			pp.put(c.p)
		}
	}()
	for written < max {
		c.want = int(min(max-written, pipeSize))
		c.in, c.err = 0, nil
		rerr := sr.Read(c.fill)
		if rerr == nil && c.err != nil {
			rerr = os.NewSyscallError("splice", c.err)
		}
		if buf := c.buf; buf != nil {
			c.buf = nil
			var n int
			if rerr == nil && c.in > 0 {
				n, err = dst.Write((*buf)[:c.in])
				written += int64(n)
			}
			copyBufs.Put(buf)
			if err != nil {
				return written, err
			}
			if rerr == nil && c.in > 0 {
				continue
			}
		}
		if rerr != nil {
			return written, rerr
		}
		if c.in == 0 {
			return written, io.EOF
		}
		c.p.data = c.in
		before := c.p.data
		c.err = nil
		werr := dr.Write(c.drain)
		written += int64(before - c.p.data)
		if werr == nil && c.err != nil {
			werr = os.NewSyscallError("splice", c.err)
		}
		if werr != nil {
			return written, werr
		}
	}
	return written, nil
}

// spliceCopy is the state of one copyTCP, shared with the callbacks of
// the source's and destination's raw connections.
type spliceCopy struct {
	pp          *pipePool
	p           *splicePipe // lent while bytes move
	buf         *[]byte     // instead of p when none could be lent
	want, in    int
	err         error
	fill, drain func(fd uintptr) bool
}

// fillFD moves what the source holds into a pipe, borrowed now, or into
// a buffer. When the source has nothing, it gives back what it borrowed
// and asks to be called again once the source is readable.
func (c *spliceCopy) fillFD(fd uintptr) bool {
	if c.p == nil {
		c.p = c.pp.get()
	}
	if c.p != nil {
		for {
			n, err := unix.Splice(int(fd), nil, c.p.w, nil, c.want, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				c.pp.put(c.p)
				c.p = nil
				return false
			}
			c.in, c.err = int(n), err
			return true
		}
	}
	buf := copyBufs.Get().(*[]byte)
	for {
		n, err := unix.Read(int(fd), (*buf)[:min(c.want, len(*buf))])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			copyBufs.Put(buf)
			return false
		}
		c.buf, c.in, c.err = buf, n, err
		return true
	}
}

// drainFD moves every byte in the pipe to the destination.
func (c *spliceCopy) drainFD(fd uintptr) bool {
	for c.p.data > 0 {
		n, err := unix.Splice(c.p.r, nil, int(fd), nil, c.p.data, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case n > 0:
			c.p.data -= int(n)
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return false
		case err == nil:
			c.err = io.ErrUnexpectedEOF // the pipe was empty, which cannot be
			return true
		default:
			c.err = err
			return true
		}
	}
	return true
}

// softNofile is the process's soft RLIMIT_NOFILE: the Go runtime has
// raised it to just under the hard limit when the process started.
func softNofile() uint64 {
	var l unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return l.Cur
}
