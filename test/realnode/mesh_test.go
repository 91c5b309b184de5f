// Package realnode proves the mesh on a real node: the chart installed by
// the real `meshctl install`, the controller running in a pod, the webhook
// injecting real pods, `meshproxy init` writing iptables rules in a pod's
// network namespace, the proxy as a sidecar, traffic through a ClusterIP,
// `meshctl check` and `meshctl uninstall`. The node is testenv.StartNode's:
// containerd, kubelet, kube-proxy and kube-scheduler on this machine, images
// built locally. It needs root and the packages of scripts/test-deps.sh,
// and skips without them.
package realnode

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }

// mesh is the world of the test: the env, the node, and meshctl.
type mesh struct {
	env     *testenv.Env
	node    *testenv.Node
	meshctl string
}

func setUp(t *testing.T, ctx context.Context) *mesh {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping in -short mode: a real node needs root, containerd and minutes of builds")
	}
	if why := testenv.NodeMissing(); why != "" {
		t.Skip("skipping: a real node " + why)
	}
	env := testenv.Shared(t)
	moduleDir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	began := time.Now()
	m := &mesh{env: env, meshctl: filepath.Join(dir, "meshctl")}
	build := exec.CommandContext(ctx, "go", "build", "-o", m.meshctl, "./cmd/meshctl")
	build.Dir = moduleDir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building meshctl: %v\n%s", err, out)
	}
	meshImage, err := testenv.BuildMeshImage(ctx, moduleDir, dir)
	if err != nil {
		t.Fatal(err)
	}
	app, err := testenv.BuildAppImage(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("meshctl and images built in %s", time.Since(began).Round(100*time.Millisecond))

	began = time.Now()
	m.node, err = testenv.StartNode(ctx, env, testenv.NodeOptions{Logf: t.Logf, KeepDir: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		began := time.Now()
		if err := m.node.Stop(); err != nil {
			t.Error(err)
		}
		t.Logf("node down in %s", time.Since(began).Round(100*time.Millisecond))
		if !t.Failed() {
			os.RemoveAll(m.node.Dir)
		} else {
			t.Logf("node logs kept in %s", m.node.Dir)
		}
	})
	for _, im := range []testenv.ImageArchive{meshImage, app} {
		if err := m.node.ImportImage(ctx, im.Path); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("node up with images in %s", time.Since(began).Round(100*time.Millisecond))
	return m
}

// run runs meshctl against the env and returns its combined output.
func (m *mesh) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, m.meshctl, append([]string{"--kubeconfig", m.env.KubeconfigPath}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func poll(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// The user's path through the mesh, on a real node.
func TestMeshOnRealNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	m := setUp(t, ctx)
	cs := m.env.Clientset()
	began := time.Now()

	// The chart as users get it, with the image that was just built.
	out, err := m.run(ctx, "install", "--wait=3m",
		"--set", "image.repository="+testenv.MeshImageRepository,
		"--set", "image.tag="+testenv.MeshImageTag,
		"--set", "image.pullPolicy=Never")
	if err != nil {
		m.dumpPods(t, wellknown.DefaultMeshNamespace)
		t.Fatalf("meshctl install: %v\n%s", err, out)
	}
	t.Logf("meshctl install (ready) took %s", time.Since(began).Round(100*time.Millisecond))
	// The API server calls the webhook through the controller's ClusterIP,
	// which works once kube-proxy has the new endpoint, a moment after the
	// pod is ready; until then the webhook fails open and pods go
	// uninjected, as they would in any cluster.
	ctrl, err := cs.CoreV1().Services(wellknown.DefaultMeshNamespace).Get(ctx, "meshctl-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	webhook := net.JoinHostPort(ctrl.Spec.ClusterIP, "443")
	poll(t, ctx, time.Minute, "the webhook reachable at "+webhook, func(ctx context.Context) (bool, error) {
		c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", webhook)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})

	const ns = "realnode-app"
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{wellknown.LabelInject: wellknown.InjectEnabled},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	poll(t, ctx, time.Minute, "the default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	began = time.Now()
	labels := map[string]string{"app": "web"}
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: testenv.AppImageName, ImagePullPolicy: corev1.PullNever,
					Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The third workload, injected by meshctl rather than the webhook,
	// starts beside the first.
	apiBegan := time.Now()
	if report := m.injectAndApply(t, ctx, ns, apiManifest); !strings.Contains(report, "Deployment api injected") {
		t.Errorf("meshctl inject of the api manifest: report %q", report)
	}

	// Injected by the webhook, and Ready with every container ready.
	var pod corev1.Pod
	poll(t, ctx, 3*time.Minute, "the web pod Ready", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil || len(pods.Items) != 1 {
			return false, nil
		}
		pod = pods.Items[0]
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	t.Logf("injected pod Ready after %s", time.Since(began).Round(100*time.Millisecond))
	names := map[string]bool{}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		names[c.Name] = true
	}
	for _, want := range []string{wellknown.ProxyContainerName, wellknown.InitContainerName, "web"} {
		if !names[want] {
			t.Errorf("pod %s has no container %s: the webhook did not inject it (containers %v)", pod.Name, want, names)
		}
	}
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.ContainerStatuses...), pod.Status.InitContainerStatuses...)
	for _, s := range statuses {
		switch {
		case s.Name == wellknown.InitContainerName:
			if s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
				t.Errorf("%s did not complete: %+v", s.Name, s.State)
			}
		case !s.Ready:
			t.Errorf("container %s not ready: %+v", s.Name, s.State)
		}
	}

	// Through the Service's ClusterIP (kube-proxy), from the node and from
	// another pod of the mesh's namespace (the client's own proxy then
	// intercepts the connection).
	url := "http://" + svc.Spec.ClusterIP + "/"
	var body string
	poll(t, ctx, time.Minute, "an answer from "+url+" on the node", func(ctx context.Context) (bool, error) {
		body, err = httpGet(ctx, url)
		return err == nil, nil
	})
	if !strings.HasPrefix(body, "hello from web") {
		t.Errorf("GET %s from the node = %q", url, body)
	}
	// The node is outside the mesh: its plaintext request reaches the
	// application without a client identity, even a forged one.
	body, err = httpGet(ctx, url, "x-meshctl-client-id", "spiffe://cluster.local/ns/forged/sa/forged")
	if err != nil || strings.Contains(body, "client id:") {
		t.Errorf("GET %s from the node with a forged client id = %q, %v; want no client id", url, body, err)
	}
	// The capture below must see plaintext when there is some: the node's
	// own request to the web pod is plaintext.
	plain, err := startCapture(func(src, dst netip.Addr) bool {
		return src.String() == pod.Status.PodIP || dst.String() == pod.Status.PodIP
	})
	if err != nil {
		t.Fatalf("capturing packets: %v", err)
	}
	_, err = httpGet(ctx, url)
	time.Sleep(200 * time.Millisecond)
	segs := plain.stop()
	if err != nil || !seen(segs, "GET / HTTP/1.1") || !seen(segs, "hello from web") {
		t.Errorf("the capture missed the node's plaintext GET %s (%v): %d segments", url, err, len(segs))
	}
	// Capture from the moment the client pod is Ready, so that its first
	// connection, with the TLS handshake, is on the record.
	web, clusterIP := netip.MustParseAddr(pod.Status.PodIP), netip.MustParseAddr(svc.Spec.ClusterIP)
	var wire *capture
	body = m.checkFromPod(t, ctx, ns, url, func(client netip.Addr) {
		peer := func(a netip.Addr) bool { return a == web || a == clusterIP }
		wire, err = startCapture(func(src, dst netip.Addr) bool {
			return src == client && peer(dst) || dst == client && peer(src)
		})
		if err != nil {
			t.Fatalf("capturing packets: %v", err)
		}
		t.Cleanup(func() { wire.stop() })
	})

	// Between the two injected pods the connection is mesh TLS: the web
	// pod's proxy verified the client's certificate, hands its SPIFFE id to
	// the application, and counts the connection by that identity.
	clientID := "spiffe://cluster.local/ns/" + ns + "/sa/default"
	if !strings.Contains(body, "client id: "+clientID+"\n") {
		t.Errorf("GET %s from pod client = %q, want the client's identity %s", url, body, clientID)
	}
	metricsURL := "http://" + net.JoinHostPort(pod.Status.PodIP, fmt.Sprint(wellknown.ProxyAdminPort)) + "/metrics"
	inbound := `meshproxy_mtls_connections_total{direction="inbound",peer_identity="` + clientID + `"} `
	var metrics string
	wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		metrics, err = httpGet(ctx, metricsURL)
		return err == nil && strings.Contains(metrics, inbound), nil
	})
	if err != nil {
		t.Errorf("the web proxy's metrics: %v", err)
	} else if !strings.Contains(metrics, inbound) {
		t.Errorf("the web proxy's %s has no %s...; its mTLS lines:\n%s", metricsURL, inbound, grepLines(metrics, "meshproxy_mtls"))
	} else {
		t.Logf("web proxy: %s", grepLines(metrics, inbound))
	}
	m.checkWireIsTLS(t, ctx, ns, wire, clientID)

	// Jobs, injected by the webhook and by meshctl, run to completion: the
	// proxy is a native sidecar. Their namespace stays until after
	// uninstall, which must not count their finished pods.
	const jobsNS = "realnode-jobs"
	jobsBegan := time.Now()
	jobs := m.startJobs(t, ctx, jobsNS, "http://web."+ns+"/")
	defer cs.CoreV1().Namespaces().Delete(context.Background(), jobsNS, metav1.DeleteOptions{})
	m.checkInjectedByMeshctl(t, ctx, ns, apiBegan)
	m.checkJobsComplete(t, ctx, jobsNS, jobs, jobsBegan)
	m.checkLiveInjection(t, ctx, ns, "web", clientID)
	// Before the controller's outage below: with the controller away, an
	// endpoint deleted meanwhile stays in the proxies' tables until they
	// reconnect.
	m.checkRolloutLosesNoRequest(t, ctx, ns, "web")

	out, err = m.run(ctx, "check", "--wait=2m")
	if err != nil {
		t.Errorf("meshctl check: %v\n%s", err, out)
	} else {
		t.Logf("meshctl check:\n%s", out)
	}
	if !strings.Contains(out, "√ "+uninjectedCheck) {
		t.Errorf("meshctl check does not pass %q with every pod injected:\n%s", uninjectedCheck, out)
	}
	m.checkUninjectedPodReported(t, ctx, ns, webhook)
	// The controller was away just now: a pod deleted meanwhile (the old
	// web pod of the rollout above) can stay in the client proxy's table,
	// with a pooled connection to its vanished address, until the proxy
	// notices the lost stream and reconnects (within 15 s; see "Losing the
	// controller" in docs/proxy.md). Wait for that before the next step,
	// which is about the controller pod's deletion alone.
	poll(t, ctx, time.Minute, "the client's traffic after the controller's outage", func(ctx context.Context) (bool, error) {
		out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns,
			"exec", "client", "-c", "client", "--", "/usr/local/bin/testapp", "get", "http://web/").CombinedOutput()
		return err == nil && strings.Contains(string(out), "client id: "+clientID), nil
	})

	// Deleting the controller pod does not stop traffic between meshed
	// pods: the proxies keep their certificates and tables while the
	// Deployment replaces it.
	if b, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", wellknown.DefaultMeshNamespace,
		"delete", "pod", "-l", wellknown.LabelComponent+"=controller", "--wait=false").CombinedOutput(); err != nil {
		t.Fatalf("deleting the controller pod: %v\n%s", err, b)
	}
	for i := range 3 {
		out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns,
			"exec", "client", "-c", "client", "--", "/usr/local/bin/testapp", "get", "http://web/").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "client id: "+clientID) {
			t.Errorf("request %d while the controller pod is replaced: %v: %q", i, err, out)
		}
	}

	// uninstall refuses while pods run the proxy: the application goes first.
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, 2*time.Minute, "namespace "+ns+" gone", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	// The Jobs' Completed pods still carry the proxy in their spec, but run
	// nothing: uninstall goes ahead without --force.
	done, err := cs.CoreV1().Pods(jobsNS).List(ctx, metav1.ListOptions{})
	if err != nil || len(done.Items) < len(jobs) {
		t.Errorf("the Jobs' finished pods are gone before uninstall: %v", err)
	}
	began = time.Now()
	if out, err := m.run(ctx, "uninstall", "--wait=3m"); err != nil {
		t.Fatalf("meshctl uninstall: %v\n%s", err, out)
	}
	t.Logf("meshctl uninstall took %s", time.Since(began).Round(100*time.Millisecond))
	m.checkUninstalled(t, ctx)
}

// checkFromPod runs a client pod in the meshed namespace that GETs url,
// and returns the body. ready hears the pod's IP once it is Ready, before
// the first request.
func (m *mesh) checkFromPod(t *testing.T, ctx context.Context, ns, url string, ready func(netip.Addr)) string {
	t.Helper()
	cs := m.env.Clientset()
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "client", Image: testenv.AppImageName, ImagePullPolicy: corev1.PullNever,
				Args: []string{"sleep"},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var clientIP netip.Addr
	poll(t, ctx, 2*time.Minute, "the client pod Ready", func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "client", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				clientIP, err = netip.ParseAddr(p.Status.PodIP)
				return err == nil, nil
			}
		}
		return false, nil
	})
	ready(clientIP)
	var out []byte
	var err error
	poll(t, ctx, time.Minute, "an answer from "+url+" in the client pod", func(ctx context.Context) (bool, error) {
		out, err = exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns,
			"exec", "client", "-c", "client", "--", "/usr/local/bin/testapp", "get", url).CombinedOutput()
		return err == nil, nil
	})
	if !strings.HasPrefix(string(out), "hello from web") {
		t.Errorf("GET %s from pod client = %q", url, out)
	}
	return string(out)
}

// checkUninstalled looks for the mesh's objects by their ownership label.
func (m *mesh) checkUninstalled(t *testing.T, ctx context.Context) {
	t.Helper()
	cs := m.env.Clientset()
	if _, err := cs.CoreV1().Namespaces().Get(ctx, wellknown.DefaultMeshNamespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s still there after uninstall (%v)", wellknown.DefaultMeshNamespace, err)
	}
	sel := metav1.ListOptions{LabelSelector: "meshctl.dev/control-plane-ns=" + wellknown.DefaultMeshNamespace}
	if l, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, sel); err != nil || len(l.Items) > 0 {
		t.Errorf("webhook configurations left after uninstall: %v %v", l, err)
	}
	if l, err := cs.RbacV1().ClusterRoles().List(ctx, sel); err != nil || len(l.Items) > 0 {
		t.Errorf("cluster roles left after uninstall: %d %v", len(l.Items), err)
	}
	if l, err := cs.RbacV1().ClusterRoleBindings().List(ctx, sel); err != nil || len(l.Items) > 0 {
		t.Errorf("cluster role bindings left after uninstall: %d %v", len(l.Items), err)
	}
	out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "get", "crd", "-l", "meshctl.dev/control-plane-ns="+wellknown.DefaultMeshNamespace, "-o", "name").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("CRDs left after uninstall: %v %s", err, out)
	}
}

// dumpPods logs the pods of a namespace with their states and events, for
// a failed readiness wait.
func (m *mesh) dumpPods(t *testing.T, ns string) {
	out, _ := exec.Command("kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns, "describe", "pods").CombinedOutput()
	t.Logf("pods in %s:\n%s", ns, out)
}

// seen says whether a captured payload contains s.
func seen(segs []segment, s string) bool {
	for _, seg := range segs {
		if strings.Contains(string(seg.payload), s) {
			return true
		}
	}
	return false
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var keep []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// httpGet returns the body of a 200 answer to GET url, sent with the
// headers given as name, value pairs.
func httpGet(ctx context.Context, url string, header ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	// No proxy from the environment: the address is on this machine.
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// checkWireIsTLS has the client GET the Service by its name (through the
// node's cluster DNS and the pod's search list), stops the capture of the
// packets between the client pod and the web pod or its ClusterIP, and
// checks that they carry TLS records and never the plaintext requests or
// answers.
func (m *mesh) checkWireIsTLS(t *testing.T, ctx context.Context, ns string, c *capture, clientID string) {
	t.Helper()
	url := "http://web/"
	out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns,
		"exec", "client", "-c", "client", "--", "/usr/local/bin/testapp", "get", url).CombinedOutput()
	time.Sleep(200 * time.Millisecond) // the last ACKs and alerts
	segs := c.stop()
	if err != nil || !strings.Contains(string(out), "client id: "+clientID) {
		t.Fatalf("GET %s (by name) in pod client: %v: %q", url, err, out)
	}
	if len(segs) == 0 {
		t.Fatal("no packets captured between the client and web pods")
	}
	// The first payload of each direction of each connection starts a TLS
	// record: handshake (22), or application data (23) on a reused one.
	first := map[[2]netip.AddrPort]bool{}
	records := map[string]int{}
	var bytes int
	for _, s := range segs {
		bytes += len(s.payload)
		for _, plain := range []string{"GET /", "HTTP/1.1", "hello from", "client id:", "x-meshctl-client-id"} {
			if strings.Contains(string(s.payload), plain) {
				t.Errorf("plaintext %q on the wire %s -> %s: %q", plain, s.src, s.dst, s.payload)
			}
		}
		key := [2]netip.AddrPort{s.src, s.dst}
		if first[key] {
			continue
		}
		first[key] = true
		if len(s.payload) < 3 || s.payload[0] < 20 || s.payload[0] > 23 || s.payload[1] != 3 {
			t.Errorf("%s -> %s begins with % x, not a TLS record", s.src, s.dst, s.payload[:min(len(s.payload), 8)])
			continue
		}
		records[map[byte]string{20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}[s.payload[0]]]++
	}
	t.Logf("captured %d TCP segments with payload (%d bytes) between the client and web pods: no plaintext; the flows begin with TLS records %v",
		len(segs), bytes, records)
	if records["handshake"] == 0 {
		t.Errorf("no TLS handshake captured between the client and web pods")
	}
}

// checkRolloutLosesNoRequest restarts a meshed Deployment whose
// application exits at once on SIGTERM while the meshed client pod sends
// it steady requests: the server's proxy, still accepting during its drain
// delay, tells the client's proxy that the application never saw such a
// request, and the client's proxy sends it to the new pod (docs/proxy.md,
// "Requests an endpoint did not process").
func (m *mesh) checkRolloutLosesNoRequest(t *testing.T, ctx context.Context, ns, deployment string) {
	t.Helper()
	kubectl := func(args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", m.env.KubeconfigPath, "-n", ns}, args...)...)
	}
	type result struct {
		out []byte
		err error
	}
	loaded := make(chan result, 1)
	go func() {
		out, err := kubectl("exec", "client", "-c", "client", "--", "/usr/local/bin/testapp", "load", "http://"+deployment+"/", "20s", "20ms").CombinedOutput()
		loaded <- result{out, err}
	}()
	time.Sleep(2 * time.Second)
	began := time.Now()
	if out, err := kubectl("rollout", "restart", "deployment/"+deployment).CombinedOutput(); err != nil {
		t.Fatalf("kubectl rollout restart: %v\n%s", err, out)
	}
	if out, err := kubectl("rollout", "status", "deployment/"+deployment, "--timeout=2m").CombinedOutput(); err != nil {
		t.Fatalf("kubectl rollout status: %v\n%s", err, out)
	}
	t.Logf("rollout of %s under load took %s", deployment, time.Since(began).Round(100*time.Millisecond))
	r := <-loaded
	if r.err != nil || !strings.Contains(string(r.out), " 0 failed") {
		t.Errorf("steady requests during the rollout of %s: %v\n%s", deployment, r.err, r.out)
	} else {
		t.Logf("during the rollout: %s", strings.TrimSpace(string(r.out)))
	}
}
