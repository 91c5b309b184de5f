package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// process is one running control-plane component.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string        // path of the file holding its stdout and stderr
	done chan struct{} // closed when it has exited; err is set then
	err  error
}

// startProcess runs bin with args, its output going to <dir>/<name>.log.
//
// The component gets its own process group, so that Stop can kill it with
// everything it started, and SIGKILL when the test process dies, so that a
// test binary killed by `go test -timeout` leaves nothing running.
func startProcess(dir, name, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating the %s log: %w", name, err)
	}
	defer f.Close() // the child holds its own descriptor
	fmt.Fprintf(f, "+ %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startFromSpawner(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process and its group and waits for it.
func (p *process) kill() {
	if !p.exited() {
		// Negative pid: the whole process group.
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// tail returns the last lines of the process's log, for error messages.
func (p *process) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", p.log, err)
	}
	return tail(b, 30)
}

// failure describes why the process did not become ready, with its log.
func (p *process) failure(err error) error {
	return fmt.Errorf("%s: %w\n--- last lines of %s ---\n%s", p.name, err, p.log, p.tail())
}

// portInUse reports whether the process died because a port it was given was
// taken between picking and binding; then starting again with new ports helps.
func (p *process) portInUse() bool {
	return p.exited() && strings.Contains(p.tail(), "address already in use")
}

// waitReady polls ready until it returns nil, the process exits, timeout
// passes or ctx ends.
func (p *process) waitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if p.exited() {
			return p.failure(fmt.Errorf("exited before becoming ready: %v", p.err))
		}
		if last = ready(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return p.failure(fmt.Errorf("not ready after %s: %w (last check: %v)", timeout, ctx.Err(), last))
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// Another process may take one before the component binds it; callers retry
// the start when that happens (see portInUse).
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// pickPorts is freePorts; a test replaces it to hand out a port that is
// really taken, which is otherwise left to chance.
var pickPorts = freePorts

// startRetrying starts a component up to three times, with fresh ports each
// time, until it is ready; start returns the process for the given ports.
func startRetrying(ctx context.Context, nports int, timeout time.Duration,
	start func(ports []int) (*process, func(context.Context) error, error)) (*process, []int, error) {
	var err error
	for range 3 {
		var ports []int
		if ports, err = pickPorts(nports); err != nil {
			return nil, nil, err
		}
		p, ready, serr := start(ports)
		if serr != nil {
			return nil, nil, serr
		}
		if err = p.waitReady(ctx, timeout, ready); err == nil {
			return p, ports, nil
		}
		p.kill()
		if !p.portInUse() {
			return nil, nil, err
		}
	}
	return nil, nil, errors.Join(errors.New("ports kept being taken"), err)
}

// The kernel sends Pdeathsig when the thread that forked the child exits,
// not the process. A Go thread exits when a goroutine ends while locked to
// it, as netns.Pod.Do's goroutines do after entering a pod's namespace; if
// the scheduler had forked a component from that thread, the component was
// killed mid-test (an API server gone after ten seconds, at random).
// Components are therefore forked from one goroutine locked to its thread
// for the life of the process.
type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

var spawner = make(chan spawnRequest)

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives as long as the process
		for r := range spawner {
			r.done <- r.cmd.Start()
		}
	}()
}

func startFromSpawner(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	spawner <- spawnRequest{cmd, done}
	return <-done
}
