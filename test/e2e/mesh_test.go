package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/meshctl/mesh/internal/controller/testcert"
	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/testenv/netns"
	"github.com/meshctl/mesh/internal/wellknown"
)

// The mesh end to end: the real controller (meshcontroller, a local
// process under the chart's ServiceAccount and RBAC) watching the real test
// API server, and pods that are network namespaces behind `meshproxy init`,
// each proxy bootstrapped as injection configures it. The test plays the
// kubelet: it registers each pod with its address, and kube-controller-
// manager writes the EndpointSlices that discovery reads.

// meshOptions make a world of its own for each test that needs one: its
// namespaces, its pods' subnet, and what differs.
type meshOptions struct {
	meshNS, appNS, subnet string
	// values are chart values over the defaults, e.g. the MeshConfig's
	// certificate lifetime.
	values map[string]any
	// mtls is the inbound.mtls of a pod's own proxy configuration, by pod
	// name; absent means the mesh-wide mode decides.
	mtls map[string]string
	// impostor makes the impostor pod (see setUpMesh).
	impostor bool
}

// endToEnd is the world of TestMeshEndToEnd.
var endToEnd = meshOptions{
	meshNS: "e2e-mesh-system", appNS: "e2e-mesh", subnet: "10.236.0.0/24",
	mtls:     map[string]string{"server-a": "strict", "server-b": "strict"},
	impostor: true,
}

func spiffeID(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

// meshWorld is the test's cluster: the controller, the client, two server
// replicas, a server whose proxy holds another identity than its pod
// announces, and a pod without a proxy.
type meshWorld struct {
	*mesh
	meshNS     string
	appNS      string
	env        *testenv.Env
	ctlBin     string
	ctlArgs    []string
	ctl        *exec.Cmd
	ctlOut     *testenv.Output
	serverVIP  netip.Addr
	plainVIP   netip.Addr
	clientVIP  netip.Addr
	impostorIP netip.Addr
	pods       map[string]*netns.Pod
	anchorsPEM []byte
	// ident is the identity CA the world started with; dirs are the
	// controller's mounted credentials ("issuer", "anchors", "webhook"),
	// which a test may rewrite as the kubelet would.
	ident    *pki.IdentityBundle
	dirs     map[string]string
	ctlAdmin string // the controller's admin address, host:port
}

func setUpMesh(t *testing.T, o meshOptions) *meshWorld {
	t.Helper()
	netns.RequireRoot(t)
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		t.Skip("skipping: iptables is not installed (apt-get install iptables)")
	}
	env := testenv.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	bin, err := os.MkdirTemp("", "meshe2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	os.Chmod(bin, 0o755)
	for _, b := range []string{"meshproxy", "meshcontroller"} {
		build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, b), "github.com/meshctl/mesh/cmd/"+b)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", b, err, out)
		}
	}
	if err := copyFile(os.Args[0], filepath.Join(bin, "app")); err != nil {
		t.Fatal(err)
	}
	w := &meshWorld{mesh: &mesh{bin: bin}, meshNS: o.meshNS, appNS: o.appNS, env: env, ctlBin: filepath.Join(bin, "meshcontroller"), pods: map[string]*netns.Pod{}}

	// The control plane's objects, as the chart renders them.
	ident, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	w.anchorsPEM, w.ident = ident.TrustAnchorsPEM, ident
	ca := testcert.NewCA(t)
	certPEM, keyPEM := ca.Serving(t, 2, time.Now().Add(time.Hour))
	manifest, err := render.Render(render.Options{
		Namespace: o.meshNS,
		Values:    o.values,
		Identity:  render.Identity{TrustAnchorsPEM: ident.TrustAnchorsPEM, IssuerCertPEM: ident.IssuerCertPEM, IssuerKeyPEM: ident.IssuerKeyPEM},
		Webhook:   render.Webhook{CABundlePEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM},
		Version:   "v0.0.0-e2e",
	})
	if err != nil {
		t.Fatal(err)
	}
	var docs bytes.Buffer
	for _, o := range manifest.Objects {
		switch o.GetKind() {
		case "CustomResourceDefinition", "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ConfigMap":
			b, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			docs.WriteString("---\n")
			docs.Write(b)
		}
	}
	kubectl(t, ctx, env, &docs, "apply", "--server-side", "-f", "-")
	kubectl(t, ctx, env, nil, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
	kubectl(t, ctx, env, strings.NewReader(manifestOf(t, manifest, "MeshConfig")), "apply", "--server-side", "-f", "-")

	// The controller's credentials, mounted as the chart mounts them.
	dirs := map[string]string{}
	w.dirs = dirs
	for _, d := range []string{"webhook", "issuer", "anchors"} {
		dirs[d] = filepath.Join(bin, d)
		os.Mkdir(dirs[d], 0o700)
	}
	testcert.WriteSecretDir(t, dirs["webhook"], certPEM, keyPEM)
	testcert.WriteSecretDir(t, dirs["issuer"], ident.IssuerCertPEM, ident.IssuerKeyPEM)
	testcert.WriteMountDir(t, dirs["anchors"], map[string][]byte{"ca-bundle.crt": ident.TrustAnchorsPEM})
	kubeconfig := serviceAccountKubeconfig(t, ctx, env, o.meshNS, wellknown.ControllerServiceAccount, filepath.Join(bin, "controller.kubeconfig"))

	n := netns.New(t, o.subnet)
	ports := freePorts(t, 3)
	// The controller runs on the host, where it reaches the API server on
	// loopback; pods reach it at the address of a "controller" pod, whose
	// port the test forwards to the host, as a Service would.
	ctlPod := n.MustAddPod(t, "controller")
	meshAPI := netip.AddrPortFrom(ctlPod.Addr, wellknown.ControllerMeshAPIPort)
	forwardIntoPod(t, ctlPod, meshAPI, fmt.Sprintf("127.0.0.1:%d", ports[0]))
	w.ctlArgs = []string{"--kubeconfig=" + kubeconfig, "--mesh-namespace=" + o.meshNS,
		"--webhook-port=" + strconv.Itoa(ports[1]), "--admin-port=" + strconv.Itoa(ports[2]), "--meshapi-port=" + strconv.Itoa(ports[0]),
		"--webhook-tls-dir=" + dirs["webhook"], "--identity-issuer-dir=" + dirs["issuer"], "--trust-anchors-dir=" + dirs["anchors"],
		"--log-format=text", "--log-level=debug", "--shutdown-delay=0s"}
	w.startController(t)
	t.Cleanup(func() { w.stopController(t) })
	w.ctlAdmin = fmt.Sprintf("127.0.0.1:%d", ports[2])
	waitHTTP(t, "http://"+w.ctlAdmin+"/ready", 60*time.Second, w.ctlOut)

	// The application side: ServiceAccounts, Services, Pods.
	cs := env.Clientset()
	mustCreate(t, func() error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.appNS}}, metav1.CreateOptions{})
		return err
	})
	for _, sa := range []string{"client", "server", "impostor"} {
		mustCreate(t, func() error {
			_, err := cs.CoreV1().ServiceAccounts(o.appNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
			return err
		})
	}
	for _, svc := range []string{"server", "plain", "client"} {
		s, err := cs.CoreV1().Services(o.appNS).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: svc},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": svc}, Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(portHTTP)},
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vip := netip.MustParseAddr(s.Spec.ClusterIP)
		switch svc {
		case "server":
			w.serverVIP = vip
		case "plain":
			w.plainVIP = vip
		case "client":
			w.clientVIP = vip
		}
	}

	// Every pod, in the order of a real one: init rules, sidecar, app. The
	// impostor's pod says ServiceAccount "server", but its proxy holds a
	// token of "impostor": discovery announces the identity of the pod's
	// ServiceAccount, which its proxy cannot prove.
	type podSpec struct {
		name, app, sa, tokenSA string
		meshed                 bool
	}
	specs := []podSpec{
		{name: "client", app: "client", sa: "client", tokenSA: "client", meshed: true},
		{name: "server-a", app: "server", sa: "server", tokenSA: "server", meshed: true},
		{name: "server-b", app: "server", sa: "server", tokenSA: "server", meshed: true},
		{name: "plain", app: "plain", sa: "default"},
	}
	for _, s := range specs {
		p := n.MustAddPod(t, s.name)
		w.pods[s.name] = p
		if s.meshed {
			w.init(t, ctx, p)
			w.startMeshProxy(t, ctx, p, s.sa, s.tokenSA, meshAPI, o.mtls[s.name])
		}
		w.start(t, p, "server", exec.Command(filepath.Join(bin, "app")), true)
		waitListening(t, p, portHTTP)
		w.registerPod(t, ctx, s.name, s.app, s.sa, s.meshed, p.Addr)
	}
	w.client = w.pods["client"]
	if !o.impostor {
		return w
	}
	// The impostor serves the "server" Service too once it is registered
	// (see TestMeshRefusesAnImpostor); it is made here but not registered.
	imp := n.MustAddPod(t, "impostor")
	w.pods["impostor"] = imp
	w.impostorIP = imp.Addr
	w.init(t, ctx, imp)
	w.startMeshProxy(t, ctx, imp, "impostor", "impostor", meshAPI, "")
	w.start(t, imp, "server", exec.Command(filepath.Join(bin, "app")), true)
	waitListening(t, imp, portHTTP)
	return w
}

func (w *meshWorld) startController(t *testing.T) {
	t.Helper()
	w.ctlOut = &testenv.Output{}
	w.ctl = exec.Command(w.ctlBin, w.ctlArgs...)
	w.ctl.Stdout, w.ctl.Stderr = w.ctlOut, w.ctlOut
	if err := w.ctl.Start(); err != nil {
		t.Fatal(err)
	}
}

func (w *meshWorld) stopController(t *testing.T) {
	if w.ctl == nil {
		return
	}
	w.ctl.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { w.ctl.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		w.ctl.Process.Kill()
		<-done
	}
	if t.Failed() {
		t.Logf("controller output:\n%s", w.ctlOut.String())
	}
	w.ctl = nil
}

// startMeshProxy runs `meshproxy run` with the bootstrap injection writes:
// the controller's address and identity, the trust anchors, and a token of
// tokenSA with the mesh's audience. mtls, when not empty, is the proxy's
// own inbound.mtls.
func (w *meshWorld) startMeshProxy(t *testing.T, ctx context.Context, p *netns.Pod, podSA, tokenSA string, meshAPI netip.AddrPort, mtls string) {
	t.Helper()
	token, err := w.env.ServiceAccountToken(ctx, w.appNS, tokenSA, authenticationv1.TokenRequestSpec{
		Audiences: []string{wellknown.IdentityTokenAudience}, ExpirationSeconds: ptr(int64(3600))})
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(w.bin, p.Name+".token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o644); err != nil {
		t.Fatal(err)
	}
	inbound := map[string]any{"address": fmt.Sprintf(":%d", wellknown.ProxyInboundPort)}
	if mtls != "" {
		inbound["mtls"] = mtls
	}
	conf := map[string]any{
		"version":  "bootstrap",
		"workload": map[string]any{"name": p.Name, "namespace": w.appNS},
		"inbound":  inbound,
		"controller": map[string]any{
			"address":        meshAPI.String(),
			"serverIdentity": spiffeID(w.meshNS, wellknown.ControllerServiceAccount),
			"trustAnchors":   []string{string(w.anchorsPEM)},
			"tokenFile":      tokenFile,
		},
	}
	path := filepath.Join(w.bin, p.Name+".json")
	b, _ := json.Marshal(conf)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(w.bin, "meshproxy"), "run", "--config", path, "--log-format", "text", "--log-level", "debug")
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+w.appNS, "SERVICE_ACCOUNT="+podSA, "POD_NAME="+p.Name)
	w.start(t, p, "meshproxy", cmd, false)
	waitListening(t, p, wellknown.ProxyAdminPort)
}

// registerPod creates the pod in the API server and reports it running and
// ready at its namespace's address, as its kubelet would.
func (w *meshWorld) registerPod(t *testing.T, ctx context.Context, name, app, sa string, meshed bool, ip netip.Addr) {
	t.Helper()
	containers := []corev1.Container{{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{ContainerPort: portHTTP}}}}
	if meshed {
		containers = append(containers, corev1.Container{Name: wellknown.ProxyContainerName, Image: "meshproxy"})
	}
	_, err := w.env.Clientset().CoreV1().Pods(w.appNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, Containers: containers},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.env.SetPodState(ctx, w.appNS, name, testenv.PodState{Ready: true, IP: ip}); err != nil {
		t.Fatal(err)
	}
}

func (w *meshWorld) setReady(t *testing.T, name string, ready bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.env.SetPodState(ctx, w.appNS, name, testenv.PodState{Ready: ready, IP: w.pods[name].Addr}); err != nil {
		t.Fatal(err)
	}
}

func TestMeshEndToEnd(t *testing.T) {
	w := setUpMesh(t, endToEnd)
	server := netip.AddrPortFrom(w.serverVIP, 80)

	// Every proxy gets a certificate and the controller's configuration.
	for _, name := range []string{"client", "server-a", "server-b"} {
		waitProxyReady(t, w.pods[name])
	}

	t.Run("mTLS by ClusterIP", func(t *testing.T) {
		out := w.eventuallyCall(t, "http1", server, "client-id="+spiffeID(w.appNS, "client"))
		if !strings.Contains(out, "pod=server-") {
			t.Fatalf("answer %q", out)
		}
		out = w.eventuallyCall(t, "h2c", server, "client-id="+spiffeID(w.appNS, "client"))
		for _, name := range []string{"server-a", "server-b"} {
			if c := scrapeText(t, w.pods[name]); strings.Contains(c, `peer_identity="`+spiffeID(w.appNS, "client")+`"`) {
				return
			}
		}
		t.Errorf("no server proxy counted the client's identity; last answer %q", out)
	})

	t.Run("a pod without a proxy is reached in plaintext", func(t *testing.T) {
		out := w.eventuallyCall(t, "http1", netip.AddrPortFrom(w.plainVIP, 80), "pod=plain")
		if !strings.Contains(out, "client-id= ") {
			t.Errorf("the plain server got a client identity: %q", out)
		}
	})

	t.Run("strict mode refuses plaintext", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*appTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(w.bin, "app"), netip.AddrPortFrom(w.pods["server-a"].Addr, portHTTP).String())
		cmd.Env = append(os.Environ(), appEnv+"=http1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appUID}}
		var out testenv.Output
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := w.pods["plain"].Start(cmd); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err == nil {
			t.Errorf("a plaintext request reached a strict server: %s", out.String())
		}
		if c := scrapeText(t, w.pods["server-a"]); !strings.Contains(c, `reason="mtls_required"`) {
			t.Errorf("the refusal was not counted")
		}
	})

	t.Run("a removed endpoint gets no new request, on open connections too", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(w.bin, "app"), server.String(), "6s")
		cmd.Env = append(os.Environ(), appEnv+"=keepalive")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appUID}}
		var out testenv.Output
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := w.client.Start(cmd); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		removed := time.Now()
		w.setReady(t, "server-b", false)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("keep-alive client: %v\n%s", err, out.String())
		}
		w.setReady(t, "server-b", true)
		late, failed, total := 0, 0, 0
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			f := strings.Fields(line)
			if len(f) < 3 {
				continue
			}
			total++
			at, _ := time.Parse(time.RFC3339Nano, f[0])
			switch {
			case f[1] != "ok" || f[2] != "200":
				failed++
			case len(f) > 3 && f[3] == "server-b" && at.After(removed.Add(time.Second)):
				late++
			}
		}
		if failed > 0 || late > 0 || total < 50 {
			t.Errorf("%d requests, %d failed, %d reached the removed endpoint more than 1 s after its removal:\n%s", total, failed, late, out.String())
		}
	})

	t.Run("a proxy that cannot prove the announced identity is refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w.setReady(t, "server-a", false)
		w.setReady(t, "server-b", false)
		w.registerPod(t, ctx, "impostor", "server", "server", true, w.impostorIP)
		defer func() {
			w.env.Clientset().CoreV1().Pods(w.appNS).Delete(context.Background(), "impostor", metav1.DeleteOptions{})
			w.setReady(t, "server-a", true)
			w.setReady(t, "server-b", true)
		}()
		deadline := time.Now().Add(5 * time.Second)
		for {
			out, err := w.tryCall("http1", server)
			if err == nil && strings.Contains(out, "pod=impostor") {
				t.Fatalf("the impostor was reached: %q", out)
			}
			if err == nil && strings.Contains(out, "status=502") {
				break // refused: it cannot present the server's identity
			}
			if time.Now().After(deadline) {
				t.Fatalf("no 502 from the client proxy while only the impostor serves: %q %v", out, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	// Not a benchmark: the sidecars' memory with identity, discovery and
	// mTLS after this test's traffic, for the record.
	for _, name := range []string{"client", "server-a"} {
		t.Logf("%s proxy: %s", name, proxyRSS(filepath.Join(w.bin, name+".json")))
	}

	t.Run("traffic survives the controller, and proxies reconnect", func(t *testing.T) {
		w.eventuallyCall(t, "http1", server, "pod=server-")
		w.stopController(t)
		for range 5 {
			if out, err := w.tryCall("http1", server); err != nil || !strings.Contains(out, "status=200") {
				t.Fatalf("without the controller: %q %v", out, err)
			}
		}
		w.startController(t)
		deadline := time.Now().Add(30 * time.Second)
		for _, name := range []string{"client", "server-a", "server-b"} {
			for !discoveryConnected(t, w.pods[name]) {
				if time.Now().After(deadline) {
					t.Fatalf("the %s proxy did not reconnect", name)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		w.eventuallyCall(t, "http1", server, "client-id="+spiffeID(w.appNS, "client"))
	})
}

// tryCall is call without failing the test.
func (w *meshWorld) tryCall(kind string, dst netip.AddrPort) (string, error) {
	return w.tryCallFrom(w.client, kind, dst)
}

// tryCallFrom makes one call of the given kind from the application of
// pod p.
func (w *meshWorld) tryCallFrom(p *netns.Pod, kind string, dst netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*appTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(w.bin, "app"), dst.String())
	cmd.Env = append(os.Environ(), appEnv+"="+kind)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appUID}}
	var out testenv.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := p.Start(cmd); err != nil {
		return "", err
	}
	err := cmd.Wait()
	return out.String(), err
}

// eventuallyCall retries a call from the client until its answer holds
// want: discovery reaches the client's proxy a moment after the API server
// has the objects.
func (w *meshWorld) eventuallyCall(t *testing.T, kind string, dst netip.AddrPort, want string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := w.tryCall(kind, dst)
		if err == nil && strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s to %s: want %q, last answer %q (%v)\nclient proxy: %s\nEndpointSlices: %s", kind, dst, want, out, err, adminGet(t, w.client, "/discovery"), w.slices())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func waitProxyReady(t *testing.T, p *netns.Pod) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		body := adminGet(t, p, "/ready")
		if jsonTrue(body, "ready") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s proxy is not ready: %s\nidentity: %s", p.Name, body, adminGet(t, p, "/identity"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func discoveryConnected(t *testing.T, p *netns.Pod) bool {
	return jsonTrue(adminGet(t, p, "/discovery"), "connected")
}

func scrapeText(t *testing.T, p *netns.Pod) string { return adminGet(t, p, "/metrics") }

// adminGet reads an admin endpoint from inside the pod, over loopback.
func adminGet(t *testing.T, p *netns.Pod, path string) string {
	t.Helper()
	var body string
	err := p.Do(func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", wellknown.ProxyAdminPort), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path)
		var b bytes.Buffer
		b.ReadFrom(c)
		_, body, _ = strings.Cut(b.String(), "\r\n\r\n")
		return nil
	})
	if err != nil {
		return "error: " + err.Error()
	}
	return body
}

func kubectl(t *testing.T, ctx context.Context, env *testenv.Env, stdin io.Reader, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig=" + env.KubeconfigPath}, args...)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func manifestOf(t *testing.T, m *render.Manifest, kind string) string {
	t.Helper()
	var b strings.Builder
	for _, o := range m.Objects {
		if o.GetKind() == kind {
			y, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString("---\n")
			b.Write(y)
		}
	}
	return b.String()
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as a
// ServiceAccount, for the controller process.
func serviceAccountKubeconfig(t *testing.T, ctx context.Context, env *testenv.Env, ns, sa, path string) string {
	t.Helper()
	rc, err := env.ServiceAccountConfig(ctx, ns, sa)
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData, InsecureSkipTLSVerify: rc.Insecure}
	if len(rc.CAData) == 0 && rc.CAFile != "" {
		kc.Clusters["test"].CertificateAuthority = rc.CAFile
	}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken}
	kc.Contexts["sa"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "sa"}
	kc.CurrentContext = "sa"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

func waitHTTP(t *testing.T, url string, timeout time.Duration, logs *testenv.Output) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := exec.Command("curl", "-fsS", "--max-time", "2", url).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v %s\ncontroller output:\n%s", url, err, out, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// forwardIntoPod listens on addr inside pod and forwards every connection
// to target, dialled from the host.
func forwardIntoPod(t *testing.T, pod *netns.Pod, addr netip.AddrPort, target string) {
	t.Helper()
	var ln net.Listener
	if err := pod.Do(func() (err error) { ln, err = net.Listen("tcp", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			}()
		}
	}()
}

// jsonTrue reports whether the JSON object doc has key set to true.
func jsonTrue(doc, key string) bool {
	var m map[string]any
	return json.Unmarshal([]byte(doc), &m) == nil && m[key] == true
}

// proxyRSS is the VmRSS line of the meshproxy process run with config.
func proxyRSS(config string) string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("run\x00--config\x00"+config+"\x00")) {
			continue
		}
		status, err := os.ReadFile(filepath.Join(d, "status"))
		if err != nil {
			return err.Error()
		}
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				return strings.Join(strings.Fields(line), " ")
			}
		}
	}
	return "process not found"
}

// slices describes the EndpointSlices of the test's namespace, for a
// failure's message.
func (w *meshWorld) slices() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := w.env.Clientset().DiscoveryV1().EndpointSlices(w.appNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	pods, _ := w.env.Clientset().CoreV1().Pods(w.appNS).List(ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		ready := false
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				ready = c.Status == corev1.ConditionTrue
			}
		}
		fmt.Fprintf(&b, "\npod %s node=%q phase=%s ready=%v ip=%s labels=%v", p.Name, p.Spec.NodeName, p.Status.Phase, ready, p.Status.PodIP, p.Labels)
	}
	for _, sl := range list.Items {
		fmt.Fprintf(&b, "\n%s (rv %s):", sl.Name, sl.ResourceVersion)
		for _, e := range sl.Endpoints {
			ready := e.Conditions.Ready != nil && *e.Conditions.Ready
			fmt.Fprintf(&b, " %v ready=%v", e.Addresses, ready)
		}
	}
	return b.String()
}
