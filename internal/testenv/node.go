package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The real node: containerd, kubelet, kube-proxy and kube-scheduler on this
// machine, joined to an Env's API server, so that tests can run real pods
// (their own network namespaces and addresses, init containers running
// iptables, native sidecars, probes, logs, exec, port-forward, ClusterIPs
// through kube-proxy) where the kubelet stand-in only writes statuses.
//
// It changes the host while it runs (iptables chains, a bridge, cgroups,
// sysctls, mounts) and Stop undoes all of it; one node runs on a machine at
// a time (StartNode waits for a host-wide lock).

// NodePodCIDR is the real node's pod network (CNI bridge + host-local); the
// bridge takes its first address, which is also the node's InternalIP.
var NodePodCIDR = netip.MustParsePrefix("10.88.0.0/16")

const (
	// nodeBridge is the CNI bridge. The name is short: at most 15 bytes.
	nodeBridge = "testenv0"
	// cniNetwork names the CNI network; the bridge plugin tags its
	// iptables rules with it.
	cniNetwork = "testenv-pods"
	// nodeLock serialises real nodes across processes: two would fight
	// over the host's iptables chains, the bridge and the sysctls.
	nodeLock = "/run/testenv-node.lock"
	// apiserverChain DNATs the kubernetes Service to the API server.
	apiserverChain = "TESTENV-APISERVER"

	nodeReadyTimeout = 2 * time.Minute

	// ClusterDomain is the real node's cluster domain, which its cluster
	// DNS serves.
	ClusterDomain = "cluster.local"
)

// NodeOptions tune StartNode. The zero value is a usable node.
type NodeOptions struct {
	// Name is the Node's name. Default: the host name when it resolves to
	// a loopback address, else "localhost". The API server reaches the
	// kubelet (logs, exec, port-forward) at this name, and the kubelet,
	// which accepts anonymous requests, listens on loopback only.
	Name string
	// KeepDir keeps the node's directory (configs and logs of containerd,
	// kubelet, kube-proxy, kube-scheduler) after Stop.
	KeepDir bool
	// Logf, if set, hears about builds, starts and stops.
	Logf func(format string, args ...any)
	// BeforeStart, if set, is called once the host is this node's alone
	// (another process's node stopped, a killed one's leftovers undone)
	// and before anything changes it: the moment to record the host's
	// state for comparison after Stop.
	BeforeStart func()
}

// Node is a running real node. Stop it, even when the test fails: it is
// what restores the host.
type Node struct {
	// Name is the Node object's name.
	Name string
	// IP is the node's InternalIP: the pod bridge's address.
	IP netip.Addr
	// Dir holds the configs, logs (containerd.log, kubelet.log,
	// kube-proxy.log, kube-scheduler.log), containerd's root and the
	// kubelet's root directory.
	Dir string
	// Binaries are the node's Kubernetes components.
	Binaries NodeBinaries
	// DNS is the cluster DNS, on IP port 53, that the kubelet gives pods
	// (dnsPolicy ClusterFirst) as their nameserver, with the search list
	// <namespace>.svc.<ClusterDomain> svc.<ClusterDomain> <ClusterDomain>.
	DNS *ClusterDNS

	env     *Env
	opts    NodeOptions
	state   string // containerd's state and socket, IPAM data: on /run
	socket  string // containerd's gRPC socket
	procs   map[string]*process
	host    hostState
	unlock  func()
	stopped bool
}

// StartNode builds the node's components if needed (minutes on the first
// run on a machine, see BuildNodeBinaries), then starts containerd with its
// own configuration, root, state and socket, the kubelet, kube-proxy in
// iptables mode and kube-scheduler against env, and returns once the Node is
// Ready. Pods run with the sandbox image PauseImageName; import every other
// image they use with ImportImage and use imagePullPolicy Never or
// IfNotPresent: there is no registry.
//
// It needs root, containerd, runc, the CNI plugins (bridge, host-local,
// loopback in /usr/lib/cni), iptables and conntrack; RequireNode says
// whether they are there. On failure everything it did is undone.
func StartNode(ctx context.Context, env *Env, opts NodeOptions) (_ *Node, err error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := NodeMissing(); err != "" {
		return nil, errors.New("starting a real node: " + err)
	}
	bins, err := BuildNodeBinaries(ctx, opts.Logf)
	if err != nil {
		return nil, err
	}
	unlock, err := lockHost(ctx, opts.Logf)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	n := &Node{Name: opts.Name, IP: NodePodCIDR.Addr().Next(), Binaries: bins, env: env, opts: opts,
		procs: map[string]*process{}, unlock: unlock}
	if n.Name == "" {
		n.Name = defaultNodeName()
	}
	defer func() {
		if err != nil {
			if n.opts.KeepDir = true; n.Dir != "" {
				err = fmt.Errorf("%w\n(node directory kept: %s)", err, n.Dir)
			}
			if serr := n.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	if err := recoverKilledNode(ctx, opts.Logf); err != nil {
		return nil, err
	}
	if opts.BeforeStart != nil {
		opts.BeforeStart()
	}
	// Before anything changes the host: the state Stop restores.
	if n.host, err = recordHost(ctx); err != nil {
		return nil, err
	}
	if n.Dir, err = os.MkdirTemp("", "testenv-node-"); err != nil {
		return nil, fmt.Errorf("creating the node directory: %w", err)
	}
	if n.state, err = os.MkdirTemp("/run", "testenv-node-"); err != nil {
		return nil, fmt.Errorf("creating the node's state directory: %w", err)
	}
	n.socket = filepath.Join(n.state, "containerd.sock")
	if err := n.writeRecord(); err != nil {
		return nil, err
	}
	env.setRealNode(n.Name, true)

	if err := n.writeConfigs(); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	pause, err := buildPauseImage(ctx, n.Dir)
	if err != nil {
		return nil, err
	}
	if err := n.ImportImage(ctx, pause.Path); err != nil {
		return nil, err
	}
	if err := n.addBridge(ctx); err != nil {
		return nil, err
	}
	// On the bridge's address: pods reach it directly, no ClusterIP.
	if n.DNS, err = StartClusterDNS(env.clientset, netip.AddrPortFrom(n.IP, 53).String(), ClusterDomain); err != nil {
		return nil, err
	}
	if err := n.startKubelet(ctx); err != nil {
		return nil, err
	}
	if err := n.startKubeProxy(); err != nil {
		return nil, err
	}
	if err := n.startScheduler(); err != nil {
		return nil, err
	}
	if err := n.routeKubernetesService(ctx); err != nil {
		return nil, err
	}
	opts.Logf("testenv: node %s ready in %s (dir %s)", n.Name, time.Since(began).Round(100*time.Millisecond), n.Dir)
	return n, nil
}

// NodeMissing returns why a real node cannot run here (not root, a
// missing package), or "" when it can.
func NodeMissing() string {
	if os.Geteuid() != 0 {
		return "needs root (run the tests as root, as CI does)"
	}
	var missing []string
	for _, tool := range []string{"containerd", "ctr", "runc", "iptables", "iptables-save", "iptables-restore", "ip", "conntrack", "xtables-nft-multi", "ldd"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, plugin)); err != nil {
			missing = append(missing, cniBinDir+"/"+plugin)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("missing %s (run scripts/test-deps.sh as root)", strings.Join(missing, ", "))
	}
	return ""
}

// cniBinDir is where Debian's containernetworking-plugins puts the plugins.
const cniBinDir = "/usr/lib/cni"

// defaultNodeName is the host name when it resolves to loopback, where the
// kubelet listens; else "localhost", which always does.
func defaultNodeName() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	h = strings.ToLower(h)
	addrs, err := net.LookupIP(h)
	if err != nil || len(addrs) == 0 {
		return "localhost"
	}
	for _, a := range addrs {
		if !a.IsLoopback() {
			return "localhost"
		}
	}
	return h
}

// lockHost takes the host-wide node lock, waiting for another process's
// node to stop.
func lockHost(ctx context.Context, logf func(string, ...any)) (func(), error) {
	f, err := os.OpenFile(nodeLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the node lock: %w", err)
	}
	for waited := false; ; waited = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", nodeLock, err)
		}
		if !waited {
			logf("testenv: waiting for another process's real node to stop (%s)", nodeLock)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for another process's real node to stop: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func (n *Node) path(elem ...string) string { return filepath.Join(append([]string{n.Dir}, elem...)...) }

func (n *Node) writeConfigs() error {
	containerd := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Root on these machines lacks CAP_SYS_RESOURCE: runc cannot lower a
  # sandbox's oom_score_adj to -998 and every pod would fail with "can't get
  # final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, n.path("containerd"), filepath.Join(n.state, "containerd"), n.socket, n.socket+".ttrpc",
		PauseImageName, cniBinDir, n.path("cni"))
	cni := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[
 {"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q,"gateway":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}
`, cniNetwork, nodeBridge, filepath.Join(n.state, "ipam"), NodePodCIDR.String(), n.IP.String())
	if err := os.MkdirAll(n.path("cni"), 0o755); err != nil {
		return fmt.Errorf("writing the node's configuration: %w", err)
	}
	for name, content := range map[string]string{
		"containerd.toml":         containerd,
		"cni/10-testenv.conflist": cni,
	} {
		if err := os.WriteFile(n.path(name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("writing the node's configuration: %w", err)
		}
	}
	return nil
}

func (n *Node) startContainerd(ctx context.Context) error {
	p, err := startProcess(n.Dir, "containerd", "containerd", "--config", n.path("containerd.toml"))
	if err != nil {
		return err
	}
	n.procs["containerd"] = p
	return p.waitReady(ctx, 30*time.Second, func(ctx context.Context) error {
		_, err := n.ctr(ctx, "version")
		return err
	})
}

// ctr runs containerd's CLI against the node's containerd, in the
// namespace the CRI uses.
func (n *Node) ctr(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.socket, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// ImportImage imports an OCI image archive (see Image.WriteArchive) into
// the node's containerd, where pods find it by the name the archive
// carries.
func (n *Node) ImportImage(ctx context.Context, archive string) error {
	if _, err := n.ctr(ctx, "images", "import", archive); err != nil {
		return fmt.Errorf("importing %s: %w", archive, err)
	}
	return nil
}

// addBridge creates the CNI bridge with the node's address before the
// kubelet starts, which checks that its node IP is on an interface; the
// bridge plugin then finds its gateway address already there.
func (n *Node) addBridge(ctx context.Context) error {
	addr := netip.PrefixFrom(n.IP, NodePodCIDR.Bits()).String()
	for _, args := range [][]string{
		{"link", "add", nodeBridge, "type", "bridge"},
		{"addr", "add", addr, "dev", nodeBridge},
		{"link", "set", nodeBridge, "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

func (n *Node) startKubelet(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The API server dials the node's Hostname address, which resolves to
# loopback; the kubelet accepts anonymous requests, so it listens there only.
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
# The machines run cgroup v1, which kubelet 1.36 refuses unless told.
failCgroupV1: false
failSwapOn: false
# Without CAP_SYS_RESOURCE the kubelet cannot lower its own OOM score.
oomScoreAdj: 0
# The env's API server has no kubelet client certificate.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
# Pods (dnsPolicy ClusterFirst) ask the node's cluster DNS (ClusterDNS),
# with the usual search list and ndots:5.
clusterDomain: %s
clusterDNS: [%s]
resolvConf: /etc/resolv.conf
# Nothing could pull a removed image back: never collect or evict them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
serializeImagePulls: false
`, ports[0], ports[1], n.socket, ClusterDomain, n.IP)
	if err := os.WriteFile(n.path("kubelet.yaml"), []byte(config), 0o644); err != nil {
		return fmt.Errorf("writing the kubelet's configuration: %w", err)
	}
	p, err := startProcess(n.Dir, "kubelet", n.Binaries.Kubelet,
		"--config="+n.path("kubelet.yaml"),
		"--kubeconfig="+n.env.KubeconfigPath,
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP.String(),
		"--root-dir="+n.path("kubelet"),
		"--cert-dir="+n.path("kubelet", "pki"),
		"--v=1",
	)
	if err != nil {
		return err
	}
	n.procs["kubelet"] = p
	return p.waitReady(ctx, nodeReadyTimeout, func(ctx context.Context) error {
		node, err := n.env.clientset.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return n.untaint(ctx, node)
				}
				return fmt.Errorf("node %s not ready: %s", n.Name, c.Message)
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", n.Name)
	})
}

// untaint removes the not-ready taint the kubelet registers the node with.
// The node lifecycle controller removes it in a cluster, but the env runs
// without that controller (the kubelet stand-in's nodes send no
// heartbeats), and the scheduler places nothing on a tainted node.
func (n *Node) untaint(ctx context.Context, node *corev1.Node) error {
	var keep []corev1.Taint
	for _, t := range node.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady {
			keep = append(keep, t)
		}
	}
	if len(keep) == len(node.Spec.Taints) {
		return nil
	}
	node.Spec.Taints = keep
	if _, err := n.env.clientset.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("removing the not-ready taint of node %s: %w", n.Name, err)
	}
	return nil
}

func (n *Node) startKubeProxy() error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	p, err := startProcess(n.Dir, "kube-proxy", n.Binaries.KubeProxy,
		"--kubeconfig="+n.env.KubeconfigPath,
		"--hostname-override="+n.Name,
		"--proxy-mode=iptables",
		"--cluster-cidr="+NodePodCIDR.String(),
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(ports[0]),
		"--healthz-bind-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		// Leave the host's conntrack settings alone.
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--v=1",
	)
	if err != nil {
		return err
	}
	n.procs["kube-proxy"] = p
	return nil
}

func (n *Node) startScheduler() error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	p, err := startProcess(n.Dir, "kube-scheduler", n.Binaries.KubeScheduler,
		"--kubeconfig="+n.env.KubeconfigPath,
		"--authentication-kubeconfig="+n.env.KubeconfigPath,
		"--authorization-kubeconfig="+n.env.KubeconfigPath,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[0]),
	)
	if err != nil {
		return err
	}
	n.procs["kube-scheduler"] = p
	return nil
}

// routeKubernetesService makes the kubernetes Service reach the API server
// from pods and the node. The env's API server listens and advertises on
// loopback, which it refuses as an endpoint, so the Service has none:
// DNAT its ClusterIP to the loopback port instead, which pods may use once
// route_localnet is on (kube-proxy turns it on too). The serving certificate
// names the ClusterIP, so in-cluster clients verify it.
func (n *Node) routeKubernetesService(ctx context.Context) error {
	u, err := url.Parse(n.env.Config.Host)
	if err != nil {
		return fmt.Errorf("parsing the API server's address: %w", err)
	}
	script := fmt.Sprintf("*nat\n:%s - [0:0]\n-A %s -d %s/32 -p tcp --dport 443 -j DNAT --to-destination %s\n-I PREROUTING -j %s\n-I OUTPUT -j %s\nCOMMIT\n",
		apiserverChain, apiserverChain, ServiceCIDR.Addr().Next(), u.Host, apiserverChain, apiserverChain)
	if err := iptablesRestore(ctx, "iptables-restore", script); err != nil {
		return fmt.Errorf("routing the kubernetes Service to the API server: %w", err)
	}
	return writeSysctl("net.ipv4.conf.all.route_localnet", "1")
}

// Alive returns an error naming any of the node's components that has
// exited, with the tail of its log.
func (n *Node) Alive() error {
	var errs []error
	for _, p := range n.procs {
		if p.exited() {
			errs = append(errs, p.failure(fmt.Errorf("exited: %v", p.err)))
		}
	}
	return errors.Join(errs...)
}
