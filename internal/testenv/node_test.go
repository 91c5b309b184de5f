package testenv_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshctl/mesh/internal/testenv"
)

// httpGet returns the body of a 200 answer to GET url.
func httpGet(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// No proxy from the environment: the address is on this machine.
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, err
}

// requireNode skips unless a real node can run here.
func requireNode(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping in -short mode: a real node needs root, containerd and minutes of builds")
	}
	if why := testenv.NodeMissing(); why != "" {
		t.Skip("skipping: a real node " + why)
	}
}

// hostSnapshot is what a real node must leave as it found it.
type hostSnapshot struct {
	iptables string // iptables-save and ip6tables-save without counters and comments
	links    string // interface names
	sysctls  string
	mounts   string // mounts a node could leave: pod netns, kubelet volumes, overlays
	cgroups  string
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func snapshotHost(t *testing.T) hostSnapshot {
	t.Helper()
	var s hostSnapshot
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(tool).Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") {
				s.iptables += tool + " " + counters.ReplaceAllString(l, "") + "\n"
			}
		}
	}
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			links = append(links, strings.TrimSuffix(f[1], ":"))
		}
	}
	sort.Strings(links)
	s.links = strings.Join(links, " ")
	names := append([]string{}, testenv.NodeSysctls...)
	if dirs, err := os.ReadDir("/proc/sys/net/ipv4/conf"); err == nil {
		for _, d := range dirs {
			names = append(names, "net.ipv4.conf."+d.Name()+".forwarding", "net.ipv4.conf."+d.Name()+".route_localnet")
		}
	}
	for _, n := range names {
		if b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(n, ".", "/")); err == nil {
			s.sysctls += n + "=" + strings.TrimSpace(string(b)) + "\n"
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(mounts), "\n") {
		// Not all of /run/netns: other packages' tests add namespaces there.
		if strings.Contains(l, "testenv-node") || strings.Contains(l, "/run/netns/cni-") || strings.Contains(l, "kubepods") {
			s.mounts += l + "\n"
		}
	}
	cg, _ := exec.Command("sh", "-c", "ls -d /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods* 2>/dev/null").Output()
	s.cgroups = string(cg)
	return s
}

// A real node runs a pod behind a ClusterIP Service, and its Stop leaves the
// host as it was: the same iptables rules and chains, interfaces, sysctls,
// mounts and cgroups. (A private env: the node's scheduler would otherwise
// place the pods of the package's other tests.)
func TestNodeRunsPodsAndRestoresHost(t *testing.T) {
	requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	env, err := testenv.Start(ctx, testenv.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	// Built before the snapshot: building touches nothing the node restores.
	if _, err := testenv.BuildNodeBinaries(ctx, t.Logf); err != nil {
		t.Fatal(err)
	}
	app, err := testenv.BuildAppImage(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	// The snapshot is taken under the host lock: a node of another test
	// binary (go test runs packages in parallel) must be gone first.
	var before hostSnapshot
	began := time.Now()
	node, err := testenv.StartNode(ctx, env, testenv.NodeOptions{Logf: t.Logf, BeforeStart: func() { before = snapshotHost(t) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node up in %s", time.Since(began).Round(100*time.Millisecond))
	stopped := false
	defer func() {
		if !stopped {
			node.Stop()
		}
	}()
	if err := node.ImportImage(ctx, app.Path); err != nil {
		t.Fatal(err)
	}

	cs := env.Clientset()
	ns := namespace(t, env, "testenv-realnode")
	labels := map[string]string{"app": "web"}
	web := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptrTo(int64(1)),
			Containers: []corev1.Container{{
				Name: "web", Image: testenv.AppImageName, ImagePullPolicy: corev1.PullNever,
				Ports:          []corev1.ContainerPort{{ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 2*time.Minute, "pod web Ready", func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		c := condition(*p, corev1.PodReady)
		return c != nil && c.Status == corev1.ConditionTrue, nil
	})
	// From the node, through kube-proxy's rules, to the pod's address.
	url := "http://" + svc.Spec.ClusterIP + "/"
	var body []byte
	poll(t, 30*time.Second, "an answer from "+url, func(ctx context.Context) (bool, error) {
		body, err = httpGet(ctx, url)
		return err == nil, nil
	})
	if !strings.HasPrefix(string(body), "hello from web") {
		t.Errorf("GET %s = %q, want hello from web", url, body)
	}
	// kubectl logs goes API server -> kubelet.
	logs, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", env.KubeconfigPath, "-n", ns, "logs", "web").CombinedOutput()
	if err != nil || !strings.Contains(string(logs), "testapp serving") {
		t.Errorf("kubectl logs web: %v: %s", err, logs)
	}

	began = time.Now()
	stopped = true
	if err := node.Stop(); err != nil {
		t.Error(err)
	}
	t.Logf("node down in %s", time.Since(began).Round(100*time.Millisecond))
	after := snapshotHost(t)
	for _, c := range []struct{ what, before, after string }{
		{"iptables", before.iptables, after.iptables},
		{"interfaces", before.links, after.links},
		{"sysctls", before.sysctls, after.sysctls},
		{"mounts", before.mounts, after.mounts},
		{"cgroups", before.cgroups, after.cgroups},
	} {
		if c.before != c.after {
			t.Errorf("%s changed by the node:\nbefore:\n%s\nafter:\n%s", c.what, c.before, c.after)
		}
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{}); err == nil {
		t.Errorf("node %s still exists after Stop", node.Name)
	}
}
