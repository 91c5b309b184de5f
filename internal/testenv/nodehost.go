package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeSysctls are the sysctls that the kubelet, kube-proxy, the bridge
// plugin or StartNode itself may change; Stop writes back what they were.
// The per-interface forwarding switches of the interfaces present at the
// start are restored as well (net.ipv4.ip_forward sets them all).
var NodeSysctls = []string{
	// The bridge plugin (isGateway, ipMasq).
	"net.ipv4.ip_forward",
	"net.ipv4.conf.all.forwarding",
	"net.ipv4.conf.default.forwarding",
	"net.ipv6.conf.all.forwarding",
	"net.ipv6.conf.default.forwarding",
	// kube-proxy and the kubernetes Service's DNAT.
	"net.ipv4.conf.all.route_localnet",
	"net.bridge.bridge-nf-call-iptables",
	"net.bridge.bridge-nf-call-ip6tables",
	"net.netfilter.nf_conntrack_max",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
	"net.netfilter.nf_conntrack_tcp_timeout_close_wait",
	"net.netfilter.nf_conntrack_tcp_be_liberal",
	// The kubelet's "kernel defaults".
	"vm.overcommit_memory",
	"vm.panic_on_oom",
	"kernel.panic",
	"kernel.panic_on_oops",
	"kernel.keys.root_maxkeys",
	"kernel.keys.root_maxbytes",
}

// hostState is what StartNode found on the host, for Stop to return to.
type hostState struct {
	sysctls  [][2]string     // name, value, in the order to write them back
	tables   map[string]bool // nf_tables tables, by nftTable.String()
	chains   map[string]bool // "iptables nat KUBE-SERVICES", ...
	netns    map[string]bool // entries of /run/netns
	cgroups  map[string]bool // kubepods directories of each cgroup controller
	netnsDir bool            // /run/netns existed
	recorded bool
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(name, value string) error {
	if err := os.WriteFile(sysctlPath(name), []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting %s=%s: %w", name, value, err)
	}
	return nil
}

// interfaceSysctls are the per-interface IPv4 forwarding switches of the
// interfaces present now.
func interfaceSysctls() []string {
	dirs, _ := os.ReadDir("/proc/sys/net/ipv4/conf")
	var names []string
	for _, d := range dirs {
		if d.Name() != "all" && d.Name() != "default" {
			names = append(names, "net.ipv4.conf."+d.Name()+".forwarding")
		}
	}
	return names
}

func recordHost(ctx context.Context) (hostState, error) {
	h := hostState{netns: map[string]bool{}, cgroups: map[string]bool{}}
	for _, name := range append(append([]string{}, NodeSysctls...), interfaceSysctls()...) {
		if v, err := readSysctl(name); err == nil {
			h.sysctls = append(h.sysctls, [2]string{name, v})
		}
	}
	tables, err := nftTables()
	if err != nil {
		return hostState{}, err
	}
	h.tables = map[string]bool{}
	for _, t := range tables {
		h.tables[t.String()] = true
	}
	if h.chains, err = iptablesChains(ctx); err != nil {
		return hostState{}, err
	}
	entries, err := os.ReadDir("/run/netns")
	h.netnsDir = err == nil
	for _, e := range entries {
		h.netns[e.Name()] = true
	}
	for _, d := range kubepodsCgroups() {
		h.cgroups[d] = true
	}
	if len(h.cgroups) > 0 {
		// Its pods' cgroups would be ours too, and Stop could not tell
		// them apart.
		return hostState{}, fmt.Errorf("another kubelet runs on this machine (its cgroups exist: %s); a real node needs the machine to itself", kubepodsCgroups()[len(h.cgroups)-1])
	}
	h.recorded = true
	return h, nil
}

// kubepodsCgroups lists the kubelet's cgroup directories (cgroupfs driver)
// under every controller, deepest first.
func kubepodsCgroups() []string {
	var dirs []string
	tops, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods*")
	if more, _ := filepath.Glob("/sys/fs/cgroup/kubepods*"); len(more) > 0 {
		tops = append(tops, more...)
	}
	for _, top := range tops {
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

var iptablesFamilies = [][2]string{{"iptables-save", "iptables-restore"}, {"ip6tables-save", "ip6tables-restore"}}

// iptablesChains lists the chains of every table, both families, as
// "<save tool> <table> <chain>".
func iptablesChains(ctx context.Context) (map[string]bool, error) {
	chains := map[string]bool{}
	for _, fam := range iptablesFamilies {
		out, err := exec.CommandContext(ctx, fam[0]).Output()
		if err != nil {
			return nil, fmt.Errorf("running %s: %w", fam[0], err)
		}
		table := ""
		for _, line := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(line, "*"):
				table = line[1:]
			case strings.HasPrefix(line, ":"):
				chains[fam[0]+" "+table+" "+strings.Fields(line[1:])[0]] = true
			}
		}
	}
	return chains, nil
}

func iptablesRestore(ctx context.Context, tool, script string) error {
	cmd := exec.CommandContext(ctx, tool, "--noflush")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s\n%s", tool, err, strings.TrimSpace(string(out)), script)
	}
	return nil
}

// Stop deletes the pods on the node while the kubelet can still tear them
// down, stops the node's processes and every container, and undoes the
// node's changes to the host: the iptables chains and nf_tables tables that
// were not there before, the bridge, pod network namespaces, mounts, the
// kubelet's cgroups, and every sysctl in NodeSysctls. It deletes the Node
// object and removes Dir unless NodeOptions.KeepDir. It returns what it
// could not undo; calling it again does nothing.
func (n *Node) Stop() error {
	if n.stopped {
		return nil
	}
	n.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if p := n.procs["kube-scheduler"]; p != nil {
		p.kill()
	}
	if p := n.procs["kubelet"]; p != nil && !p.exited() {
		note(n.drain(ctx))
	}
	for _, name := range []string{"kube-proxy", "kubelet"} {
		if p := n.procs[name]; p != nil {
			p.kill()
		}
	}
	if n.DNS != nil {
		note(n.DNS.Close())
	}
	if p := n.procs["containerd"]; p != nil {
		if !p.exited() {
			n.removeContainers(ctx)
		}
		p.kill()
	}
	note(n.killShims())
	note(n.cleanHost(ctx))
	if n.env != nil {
		if n.host.recorded {
			err := n.env.clientset.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
			if err != nil && !isGone(err) {
				note(fmt.Errorf("deleting node %s: %w", n.Name, err))
			}
		}
		n.env.setRealNode(n.Name, false)
	}
	if n.state != "" {
		note(os.RemoveAll(n.state))
	}
	if n.Dir != "" && !n.opts.KeepDir {
		note(os.RemoveAll(n.Dir))
	}
	if n.host.recorded {
		os.Remove(nodeRecordPath)
	}
	if n.unlock != nil {
		n.unlock()
	}
	n.opts.Logf("testenv: node %s stopped in %s", n.Name, time.Since(began).Round(100*time.Millisecond))
	if len(errs) > 0 {
		return fmt.Errorf("stopping node %s: %w", n.Name, errors.Join(errs...))
	}
	return nil
}

// drain deletes the pods bound to the node and waits (up to a minute) for
// the kubelet to stop them, which runs the CNI DEL that removes their
// addresses, veths and masquerade rules.
func (n *Node) drain(ctx context.Context) error {
	pods := n.env.clientset.CoreV1().Pods("")
	sel := metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name}
	list, err := pods.List(ctx, sel)
	if err != nil {
		return fmt.Errorf("listing the node's pods: %w", err)
	}
	for _, p := range list.Items {
		err := n.env.clientset.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptrTo(int64(1))})
		if err != nil && !isGone(err) {
			return fmt.Errorf("deleting pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		list, err := pods.List(ctx, sel)
		if err == nil && len(list.Items) == 0 {
			// The API objects go when the containers have stopped; the
			// sandboxes (and with them the CNI DEL) follow.
			return n.waitSandboxesGone(ctx, deadline)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("the node's pods were not gone after a minute")
}

func (n *Node) waitSandboxesGone(ctx context.Context, deadline time.Time) error {
	for time.Now().Before(deadline) {
		out, err := n.ctr(ctx, "tasks", "ls", "-q")
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil // removeContainers kills what is left
}

// removeContainers kills and removes whatever containerd still runs.
func (n *Node) removeContainers(ctx context.Context) {
	out, _ := n.ctr(ctx, "tasks", "ls", "-q")
	tasks := strings.Fields(string(out))
	for _, t := range tasks {
		n.ctr(ctx, "tasks", "kill", "--signal", "SIGKILL", t)
	}
	for _, t := range tasks {
		for i := 0; i < 20; i++ {
			if _, err := n.ctr(ctx, "tasks", "delete", "--force", t); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	out, _ = n.ctr(ctx, "containers", "ls", "-q")
	for _, c := range strings.Fields(string(out)) {
		n.ctr(ctx, "containers", "rm", c)
	}
}

// killShims ends the runc shims of the node's containerd (they detach from
// it, so killing containerd leaves them) and any container process left
// in the kubelet's cgroups.
func (n *Node) killShims() error {
	if n.socket == "" {
		return nil
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(n.socket)) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, d := range kubepodsCgroups() {
		if !n.host.recorded || n.host.cgroups[d] {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return nil
}

// cleanHost undoes the node's changes to the host, after its processes
// have gone.
func (n *Node) cleanHost(ctx context.Context) error {
	if !n.host.recorded {
		return nil // StartNode failed before it changed anything
	}
	var errs []error
	// Pod network namespaces the CNI DEL did not get to.
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if n.host.netns[e.Name()] || !strings.HasPrefix(e.Name(), "cni-") {
			continue
		}
		p := filepath.Join("/run/netns", e.Name())
		syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("removing network namespace %s: %w", p, err))
		}
	}
	if left, err := os.ReadDir("/run/netns"); err == nil && len(left) == 0 && n.host.recorded && !n.host.netnsDir {
		// containerd made it (and may have mounted it on itself, as ip
		// netns does). Only when empty: other tests' namespaces may live
		// there by now, and detaching it would cut them off.
		syscall.Unmount("/run/netns", syscall.MNT_DETACH)
		os.Remove("/run/netns")
	}
	if _, err := os.Stat("/sys/class/net/" + nodeBridge); err == nil {
		if out, err := exec.CommandContext(ctx, "ip", "link", "del", nodeBridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("deleting bridge %s: %w: %s", nodeBridge, err, out))
		}
	}
	if n.host.recorded {
		errs = append(errs, n.cleanIPTables(ctx))
	}
	// Mounts under the node's directories: pod volumes, container root
	// filesystems, shm.
	errs = append(errs, unmountUnder(n.Dir, n.state))
	// The kubelet's cgroups, deepest first; a removal fails while a task is
	// still dying, so try for a few seconds.
	for i := 0; i < 20; i++ {
		left := 0
		for _, d := range kubepodsCgroups() {
			if !n.host.cgroups[d] && syscall.Rmdir(d) != nil {
				left++
			}
		}
		if left == 0 {
			break
		}
		if i == 19 {
			errs = append(errs, fmt.Errorf("%d kubepods cgroups could not be removed", left))
		}
		time.Sleep(250 * time.Millisecond)
	}
	if n.host.recorded {
		for _, kv := range n.host.sysctls {
			if _, err := os.Stat(sysctlPath(kv[0])); err != nil {
				continue // an interface that has gone
			}
			if v, _ := readSysctl(kv[0]); v != kv[1] {
				errs = append(errs, writeSysctl(kv[0], kv[1]))
			}
		}
	}
	return errors.Join(errs...)
}

// ourChain matches the chains the node's components create: kube-proxy's
// and the kubelet's KUBE-*, the bridge plugin's CNI-*, and StartNode's own.
var ourChain = regexp.MustCompile(`^(KUBE-|CNI-|TESTENV-)`)

// cleanIPTables deletes the nf_tables tables that appeared while the node
// ran (iptables-nft creates filter, nat, mangle on first use), then, in the
// tables that were there before, the node's chains and the rules that jump
// to them.
func (n *Node) cleanIPTables(ctx context.Context) error {
	var errs []error
	tables, err := nftTables()
	if err != nil {
		return err
	}
	for _, t := range tables {
		if !n.host.tables[t.String()] {
			errs = append(errs, deleteNFTTable(t))
		}
	}
	for _, fam := range iptablesFamilies {
		out, err := exec.CommandContext(ctx, fam[0]).Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("running %s: %w", fam[0], err))
			continue
		}
		if script := cleanupScript(out, func(table, chain string) bool {
			return ourChain.MatchString(chain) && !n.host.chains[fam[0]+" "+table+" "+chain]
		}); script != "" {
			errs = append(errs, iptablesRestore(ctx, fam[1], script))
		}
	}
	return errors.Join(errs...)
}

// cleanupScript returns an iptables-restore --noflush script that deletes
// the chains for which drop is true and every rule elsewhere that jumps to
// them, from iptables-save output; "" when there is nothing to do.
func cleanupScript(save []byte, drop func(table, chain string) bool) string {
	var b strings.Builder
	table, wrote := "", false
	var dels, flushes []string
	flushTable := func() {
		if len(dels)+len(flushes) > 0 {
			wrote = true
			fmt.Fprintf(&b, "*%s\n", table)
			for _, d := range dels {
				b.WriteString(d + "\n")
			}
			for _, c := range flushes {
				fmt.Fprintf(&b, "-F %s\n", c)
			}
			for _, c := range flushes {
				fmt.Fprintf(&b, "-X %s\n", c)
			}
			b.WriteString("COMMIT\n")
		}
		dels, flushes = nil, nil
	}
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case line == "COMMIT":
			flushTable()
		case strings.HasPrefix(line, ":"):
			if c := strings.Fields(line[1:])[0]; drop(table, c) {
				flushes = append(flushes, c)
			}
		case strings.HasPrefix(line, "-A "):
			f := strings.Fields(line)
			if drop(table, f[1]) {
				continue // goes with its chain
			}
			for i := 2; i+1 < len(f); i++ {
				if (f[i] == "-j" || f[i] == "-g") && drop(table, f[i+1]) {
					dels = append(dels, "-D"+line[2:])
					break
				}
			}
		}
	}
	if !wrote {
		return ""
	}
	return b.String()
}

// unmountUnder lazily unmounts every mount point below the given
// directories, deepest first.
func unmountUnder(dirs ...string) error {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return fmt.Errorf("reading mounts: %w", err)
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		mp := strings.ReplaceAll(f[1], `\040`, " ")
		for _, d := range dirs {
			if d != "" && strings.HasPrefix(mp, d+"/") {
				points = append(points, mp)
			}
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// nodeRecord is what a running node has changed, on disk (on /run, so a
// reboot forgets it with the changes), so that the next StartNode can undo
// the traces of a node whose process was killed before Stop.
type nodeRecord struct {
	Sysctls  [][2]string
	Tables   map[string]bool
	Chains   map[string]bool
	Netns    map[string]bool
	Cgroups  map[string]bool
	NetnsDir bool
	Socket   string
	Dir      string
	State    string
}

const nodeRecordPath = "/run/testenv-node.json"

func (n *Node) writeRecord() error {
	b, err := json.Marshal(nodeRecord{
		Sysctls: n.host.sysctls, Tables: n.host.tables, Chains: n.host.chains, Netns: n.host.netns,
		Cgroups: n.host.cgroups, NetnsDir: n.host.netnsDir, Socket: n.socket, Dir: n.Dir, State: n.state,
	})
	if err == nil {
		err = os.WriteFile(nodeRecordPath, b, 0o600)
	}
	if err != nil {
		return fmt.Errorf("recording the node's changes: %w", err)
	}
	return nil
}

// recoverKilledNode undoes what a node left when its process died before
// Stop; the caller holds the host lock, so that node is gone.
func recoverKilledNode(ctx context.Context, logf func(string, ...any)) error {
	b, err := os.ReadFile(nodeRecordPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var r nodeRecord
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		return fmt.Errorf("reading %s, left by a node that was not stopped: %w", nodeRecordPath, err)
	}
	logf("testenv: a real node was not stopped (its process died); undoing its changes to the host")
	n := &Node{Dir: r.Dir, state: r.State, socket: r.Socket, opts: NodeOptions{Logf: logf}, host: hostState{
		sysctls: r.Sysctls, tables: r.Tables, chains: r.Chains, netns: r.Netns, cgroups: r.Cgroups,
		netnsDir: r.NetnsDir, recorded: true,
	}}
	n.killShims()
	err = n.cleanHost(ctx)
	for _, d := range []string{r.State, r.Dir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Remove(nodeRecordPath)
	if err != nil {
		return fmt.Errorf("undoing the changes of a node that was not stopped: %w", err)
	}
	return nil
}
