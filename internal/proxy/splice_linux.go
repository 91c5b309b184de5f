package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
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

// put gives p back; a pipe that still holds bytes is closed.
func (pp *pipePool) put(p *splicePipe) {
	if p.data != 0 {
		p.close()
		pp.mu.Lock()
		pp.open--
		pp.mu.Unlock()
		return
	}
	p.used = time.Now()
	pp.mu.Lock()
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
// only. The buffers are copyBufs, those of HTTP/2 bodies. It returns io.EOF when src has ended, and the read deadline's
// error when it passes.
func (pp *pipePool) copyTCP(dst, src *net.TCPConn, max int64) (written int64, err error) {
	sr, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	dr, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	var p *splicePipe
	defer func() {
		if p != nil {
			pp.put(p)
		}
	}()
	for written < max {
		want := int(min(max-written, pipeSize))
		var (
			in   int
			serr error
			buf  *[]byte
		)
		rerr := sr.Read(func(fd uintptr) bool {
			if p == nil {
				p = pp.get()
			}
			if p != nil {
				in, serr = retryEINTR(func() (int, error) {
					n, err := unix.Splice(int(fd), nil, p.w, nil, want, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
					return int(n), err
				})
				if serr == unix.EAGAIN {
					pp.put(p)
					p = nil
					return false
				}
				return true
			}
			buf = copyBufs.Get().(*[]byte)
			in, serr = retryEINTR(func() (int, error) { return unix.Read(int(fd), (*buf)[:min(want, len(*buf))]) })
			if serr == unix.EAGAIN {
				copyBufs.Put(buf)
				buf = nil
				return false
			}
			return true
		})
		if rerr == nil && serr != nil {
			rerr = os.NewSyscallError("splice", serr)
		}
		if buf != nil {
			var n int
			if rerr == nil && in > 0 {
				n, err = dst.Write((*buf)[:in])
				written += int64(n)
			}
			copyBufs.Put(buf)
			if err != nil {
				return written, err
			}
		}
		if rerr != nil {
			return written, rerr
		}
		if in == 0 {
			return written, io.EOF
		}
		if buf != nil {
			continue
		}
		p.data = in
		n, err := pump(dr, p)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// pump moves every byte in p to the socket behind dr.
func pump(dr syscall.RawConn, p *splicePipe) (int, error) {
	var written int
	var serr error
	err := dr.Write(func(fd uintptr) bool {
		for p.data > 0 {
			n, err := retryEINTR(func() (int, error) {
				n, err := unix.Splice(p.r, nil, int(fd), nil, p.data, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				return int(n), err
			})
			if n > 0 {
				p.data -= n
				written += n
				continue
			}
			if err == unix.EAGAIN {
				return false
			}
			if err == nil {
				err = io.ErrUnexpectedEOF // the pipe was empty, which cannot be
			}
			serr = os.NewSyscallError("splice", err)
			return true
		}
		return true
	})
	return written, errors.Join(err, serr)
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
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
