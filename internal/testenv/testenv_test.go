package testenv_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/meshctl/mesh/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }

// namespace creates a namespace for one test and deletes it afterwards.
// Pods cannot be created before the namespace's default ServiceAccount
// exists, so it waits for that too.
func namespace(t *testing.T, env *testenv.Env, name string) string {
	t.Helper()
	ctx := context.Background()
	cs := env.Clientset()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() { cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	poll(t, 30*time.Second, "default service account in "+name, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return name
}

func poll(t *testing.T, timeout time.Duration, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func TestKubectlUsesKubeconfig(t *testing.T) {
	env := testenv.Shared(t)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not on PATH; the kubeconfig is tested with client-go elsewhere in this file")
	}
	out, err := exec.Command(kubectl, "--kubeconfig", env.KubeconfigPath, "get", "ns", "-o", "name").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get ns: %v\n%s", err, out)
	}
	for _, ns := range []string{"namespace/default", "namespace/kube-system"} {
		if !strings.Contains(string(out), ns) {
			t.Errorf("kubectl get ns: missing %s in\n%s", ns, out)
		}
	}
	out, err = exec.Command(kubectl, "--kubeconfig", env.KubeconfigPath, "config", "current-context").CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != testenv.ContextName {
		t.Errorf("kubectl config current-context = %q, %v; want %q", got, err, testenv.ContextName)
	}
	// kubectl parses the server's version: without the version stamp at
	// build time it cannot.
	out, err = exec.Command(kubectl, "--kubeconfig", env.KubeconfigPath, "version", "-o", "json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"gitVersion": "`+testenv.KubeVersion+`"`) {
		t.Errorf("kubectl version: %v; want server %s in\n%s", err, testenv.KubeVersion, out)
	}
}

// A deleted namespace only goes away when kube-controller-manager's
// namespace controller empties it, so this proves the controller manager runs.
func TestNamespaceDeletionFinishes(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	cs := env.Clientset()
	ns := namespace(t, env, "testenv-nsdelete")
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "namespace "+ns+" to disappear", func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

func TestServiceAccountTokenReview(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	ns := namespace(t, env, "testenv-token")
	const audience = "meshctl.dev/test"
	token, err := env.ServiceAccountToken(ctx, ns, "app", authenticationv1.TokenRequestSpec{Audiences: []string{audience}})
	if err != nil {
		t.Fatal(err)
	}
	review := func(tok string, audiences ...string) *authenticationv1.TokenReview {
		t.Helper()
		r, err := env.Clientset().AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
			Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: audiences},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating TokenReview: %v", err)
		}
		return r
	}
	r := review(token, audience)
	if !r.Status.Authenticated || r.Status.User.Username != "system:serviceaccount:"+ns+":app" {
		t.Errorf("TokenReview = authenticated %v user %q error %q; want system:serviceaccount:%s:app",
			r.Status.Authenticated, r.Status.User.Username, r.Status.Error, ns)
	}
	if r := review(token, "someone-else"); r.Status.Authenticated {
		t.Error("TokenReview accepted the token for an audience it was not issued for")
	}
	if r := review(token[:len(token)-4] + "AAAA"); r.Status.Authenticated {
		t.Error("TokenReview accepted a token with a broken signature")
	}

	// The account's own client is subject to RBAC, which grants it nothing.
	cfg, err := env.ServiceAccountConfig(ctx, ns, "app")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets as the service account: %v; want forbidden", err)
	}
}

// The path that install's readiness wait and the mesh's discovery depend on:
// Deployment -> ReplicaSet -> Pod (kube-controller-manager), the pod
// running and ready (the kubelet stand-in), and an EndpointSlice for the
// Service with the pod's address (kube-controller-manager again).
func TestDeploymentBecomesReadyWithEndpoints(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	cs := env.Clientset()
	ns := namespace(t, env, "testenv-deploy")
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptrTo(int32(2)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					InitContainers: []corev1.Container{
						{Name: "init", Image: "example.com/init:1"},
						{Name: "sidecar", Image: "example.com/proxy:1", RestartPolicy: ptrTo(corev1.ContainerRestartPolicyAlways)},
					},
					Containers: []corev1.Container{{
						Name: "web", Image: "example.com/web:1",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// First the pods cannot pull their image: the Deployment must not be
	// available, and the pods must say why.
	kctx, stopKubelet := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		env.RunKubelet(kctx, ns, "app=web", testenv.PodState{WaitingReason: "ImagePullBackOff", WaitingMessage: `Back-off pulling image "example.com/web:1"`})
	}()
	poll(t, 30*time.Second, "two pods waiting with ImagePullBackOff", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range pods.Items {
			for _, c := range p.Status.ContainerStatuses {
				if c.State.Waiting != nil && c.State.Waiting.Reason == "ImagePullBackOff" {
					n++
				}
			}
		}
		return n == 2, nil
	})
	stopKubelet()
	<-done
	waiting, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range waiting.Items {
		if p.Status.Phase != corev1.PodPending {
			t.Errorf("pod %s waiting for its image is %s, want Pending", p.Name, p.Status.Phase)
		}
		if c := condition(p, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse || !strings.Contains(c.Message, "web") {
			t.Errorf("pod %s Ready condition = %+v, want False naming container web", p.Name, c)
		}
	}
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status.ReadyReplicas != 0 {
		t.Errorf("deployment has %d ready replicas while its pods wait for images", d.Status.ReadyReplicas)
	}

	// Then they start.
	pods, err := env.MarkPodsReady(ctx, ns, "app=web")
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 {
		t.Fatalf("marked %d pods ready, want 2", len(pods))
	}
	want := map[string]bool{}
	for _, p := range pods {
		if c := condition(p, corev1.PodReady); p.Status.Phase != corev1.PodRunning || c == nil || c.Status != corev1.ConditionTrue {
			t.Errorf("pod %s: phase %s, Ready %+v; want Running and Ready", p.Name, p.Status.Phase, c)
		}
		if n := len(p.Status.InitContainerStatuses); n != 2 {
			t.Fatalf("pod %s has %d init container statuses, want 2", p.Name, n)
		}
		if s := p.Status.InitContainerStatuses[0]; s.State.Terminated == nil || s.State.Terminated.ExitCode != 0 {
			t.Errorf("init container %s: %+v, want terminated with exit code 0", s.Name, s.State)
		}
		if s := p.Status.InitContainerStatuses[1]; s.State.Running == nil || !s.Ready {
			t.Errorf("sidecar %s: ready %v, %+v; want running and ready", s.Name, s.Ready, s.State)
		}
		if !testenv.PodCIDR.Contains(mustAddr(t, p.Status.PodIP)) {
			t.Errorf("pod %s has IP %s outside %s", p.Name, p.Status.PodIP, testenv.PodCIDR)
		}
		want[p.Status.PodIP] = true
	}
	if len(want) != 2 {
		t.Errorf("pods share an address: %v", want)
	}
	poll(t, 30*time.Second, "deployment web to be available", func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 2, err
	})
	poll(t, 30*time.Second, "an EndpointSlice with both pods ready", func(ctx context.Context) (bool, error) {
		slices, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return false, err
		}
		got := map[string]bool{}
		for _, s := range slices.Items {
			if len(s.Ports) != 1 || s.Ports[0].Port == nil || *s.Ports[0].Port != 8080 {
				continue
			}
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					got[ep.Addresses[0]] = true
				}
			}
		}
		return len(got) == 2 && got[pods[0].Status.PodIP] && got[pods[1].Status.PodIP], nil
	})

	// Scaling down deletes a pod bound to a node; the kubelet stand-in must
	// finish the deletion or the pod stays Terminating.
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "one pod left after scaling down", func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		return err == nil && len(pods.Items) == 1, err
	})
}

func condition(p corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("parsing pod IP %q: %v", s, err)
	}
	return a
}

func ptrTo[T any](v T) *T { return &v }

// Stop must leave nothing running: the components are killed with their
// process groups, so the API server's port stops answering.
func TestStopEndsComponents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, err := testenv.Start(ctx, testenv.Options{NoControllerManager: true, KeepDir: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(env.Dir)
	if _, err := env.Clientset().CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("listing namespaces on a second env: %v", err)
	}
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Clientset().CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("the API server still answers after Stop")
	}
	// KeepDir keeps the logs for looking into failures.
	for _, name := range []string{"etcd.log", "kube-apiserver.log", "kubeconfig"} {
		if _, err := os.Stat(filepath.Join(env.Dir, name)); err != nil {
			t.Errorf("after Stop with KeepDir: %v", err)
		}
	}
	if err := env.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// childEnvVar makes the test binary, run again by
// TestComponentsDieWithTestProcess, start an env, print where it is and
// wait to be killed.
const childEnvVar = "TESTENV_TEST_CHILD"

// A test binary killed by `go test -timeout` (or by a person) must not
// leave a control plane running: the components get SIGKILL when it dies.
func TestComponentsDieWithTestProcess(t *testing.T) {
	if os.Getenv(childEnvVar) == "1" {
		env, err := testenv.Start(context.Background(), testenv.Options{NoControllerManager: true, KeepDir: true})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("env %s %s\n", env.Config.Host, env.Dir)
		select {} // until killed
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestComponentsDieWithTestProcess$")
	cmd.Env = append(os.Environ(), childEnvVar+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	fields := strings.Fields(line)
	if err != nil || len(fields) != 3 || fields[0] != "env" {
		t.Fatalf("child test process: %q, %v", line, err)
	}
	host, dir := strings.TrimPrefix(fields[1], "https://"), fields[2]
	defer os.RemoveAll(dir)
	if c, err := net.Dial("tcp", host); err != nil {
		t.Fatalf("the child's API server does not answer: %v", err)
	} else {
		c.Close()
	}
	cmd.Process.Kill()
	cmd.Wait()
	poll(t, 10*time.Second, "the child's API server to die with it", func(context.Context) (bool, error) {
		c, err := net.Dial("tcp", host)
		if err == nil {
			c.Close()
		}
		return err != nil, nil
	})
}

// In-cluster clients trust the API server through the kube-root-ca.crt
// ConfigMap, which must hold the env's CA; and kube-controller-manager signs
// approved CertificateSigningRequests with that CA.
func TestClusterCA(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	cs := env.Clientset()
	ns := namespace(t, env, "testenv-ca")
	poll(t, 30*time.Second, "kube-root-ca.crt in "+ns, func(ctx context.Context) (bool, error) {
		cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if got := cm.Data["ca.crt"]; got != string(env.CACertPEM) {
			return false, fmt.Errorf("kube-root-ca.crt holds\n%s\nwant the env's CA\n%s", got, env.CACertPEM)
		}
		return true, nil
	})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "testenv-client", Organization: []string{"testenv"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := cs.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "testenv-client"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
			SignerName: certificatesv1.KubeAPIServerClientSignerName,
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.CertificatesV1().CertificateSigningRequests().Delete(context.Background(), csr.Name, metav1.DeleteOptions{})
	})
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "Test", Message: "approved by the test",
	})
	if _, err := cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var certPEM []byte
	poll(t, 30*time.Second, "the CSR to be signed", func(ctx context.Context) (bool, error) {
		c, err := cs.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
		certPEM = c.Status.Certificate
		return err == nil && len(certPEM) > 0, err
	})
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatalf("signed certificate is not PEM: %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(env.CACertPEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("signed certificate does not chain to the env's CA: %v", err)
	}
}

// DaemonSet pods come pinned to a node by affinity; the stand-in must bind
// each to its own node, and give a hostNetwork pod its node's address.
func TestDaemonSetOnEveryNode(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	cs := env.Clientset()
	ns := namespace(t, env, "testenv-ds")
	nodeIPs := map[string]string{}
	for _, name := range []string{"testenv-ds-a", "testenv-ds-b"} {
		ip, err := env.EnsureNode(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !testenv.NodeCIDR.Contains(ip) {
			t.Errorf("node %s has address %s outside %s", name, ip, testenv.NodeCIDR)
		}
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(n.Spec.Taints) != 0 {
			t.Errorf("node %s keeps taints %v", name, n.Spec.Taints)
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				nodeIPs[n.Name] = a.Address
			}
		}
	}
	labels := map[string]string{"app": "agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork: true,
					Containers:  []corev1.Container{{Name: "agent", Image: "example.com/agent:1"}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, fmt.Sprintf("%d daemon pods", len(nodeIPs)), func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
		return err == nil && len(pods.Items) == len(nodeIPs), err
	})
	pods, err := env.MarkPodsReady(ctx, ns, "app=agent")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range pods {
		if seen[p.Spec.NodeName] {
			t.Errorf("two daemon pods on node %s", p.Spec.NodeName)
		}
		seen[p.Spec.NodeName] = true
		if p.Status.PodIP != nodeIPs[p.Spec.NodeName] {
			t.Errorf("hostNetwork pod %s on node %s has IP %s, want the node's %s", p.Name, p.Spec.NodeName, p.Status.PodIP, nodeIPs[p.Spec.NodeName])
		}
	}
	poll(t, 30*time.Second, "the DaemonSet to count every pod ready", func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().DaemonSets(ns).Get(ctx, "agent", metav1.GetOptions{})
		return err == nil && int(d.Status.NumberReady) == len(nodeIPs), err
	})
}
