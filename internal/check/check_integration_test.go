package check

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }

const meshVersion = "v0.9.0-test"

// run runs categories against the env as cfg says and returns the summary
// and the table the run printed.
func run(t *testing.T, restConfig *rest.Config, cfg Config, categories []Category, opts Options) (Summary, string) {
	t.Helper()
	cfg.RESTConfig = func() (*rest.Config, error) { return rest.CopyConfig(restConfig), nil }
	if cfg.Version == "" {
		cfg.Version = meshVersion
	}
	var out bytes.Buffer
	p, _ := NewPrinter(FormatTable, &out, Plain{})
	start := time.Now()
	sum := Run(context.Background(), NewState(cfg), categories, opts, p.Print)
	if err := p.Finish(sum); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d checks in %s:\n%s", len(sum.Results), time.Since(start).Round(time.Millisecond), out.String())
	return sum, out.String()
}

// result returns the final result of the check described as desc.
func result(t *testing.T, sum Summary, desc string) Result {
	t.Helper()
	for _, r := range sum.Results {
		if r.Description == desc {
			return r
		}
	}
	t.Fatalf("no result for %q", desc)
	return Result{}
}

func TestPreInstallPassesOnAnEmptyCluster(t *testing.T) {
	env := testenv.Shared(t)
	sum, out := run(t, env.Config, Config{Namespace: "mesh-pre-empty"}, PreInstall(), Options{})
	if !sum.Success {
		t.Fatalf("check --pre failed on an empty cluster:\n%s", out)
	}
	for _, r := range sum.Results {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Description, r.Err)
		}
	}
	if len(sum.Results) != 6 {
		t.Errorf("%d checks ran, want 6", len(sum.Results))
	}
}

func TestPreInstallNamesWhatTheUserMayNotCreate(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	// A ServiceAccount that no RBAC rule grants anything: it may only ask
	// what it may do.
	cfg, err := env.ServiceAccountConfig(ctx, "default", "no-rights")
	if err != nil {
		t.Fatal(err)
	}
	sum, out := run(t, cfg, Config{Namespace: "mesh-pre-norights"}, PreInstall(), Options{})
	if sum.Success {
		t.Fatalf("check --pre passed for a user without rights:\n%s", out)
	}
	r := result(t, sum, "can create the control plane's objects")
	if r.Err == nil {
		t.Fatal("the permissions check passed")
	}
	for _, r := range chartResources {
		if !strings.Contains(out, r.Kind) {
			t.Errorf("the report does not name %s:\n%s", r.Kind, out)
		}
	}
}

func TestPreInstallFailsWhenTheNamespaceExists(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh-pre-taken"}}
	if _, err := env.Clientset().CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sum, out := run(t, env.Config, Config{Namespace: ns.Name}, PreInstall(), Options{})
	if sum.Success || !strings.Contains(out, "namespace mesh-pre-taken already exists") {
		t.Fatalf("check --pre did not fail on the existing namespace:\n%s", out)
	}
}

func TestPreInstallWarnsAboutClockSkew(t *testing.T) {
	env := testenv.Shared(t)
	ahead := func() time.Time { return time.Now().Add(time.Minute) }
	sum, out := run(t, env.Config, Config{Namespace: "mesh-pre-skew", Now: ahead}, PreInstall(), Options{})
	r := result(t, sum, "this machine's clock agrees with the API server's")
	if r.Status() != StatusWarning || !strings.Contains(r.Err.Error(), "ahead of the API server's") {
		t.Errorf("clock one minute ahead: %s %v", r.Status(), r.Err)
	}
	if !sum.Success {
		t.Errorf("a clock-skew warning failed the run:\n%s", out)
	}
}

// installedMesh applies the chart to env as meshctl install would leave it,
// and returns the identity it was rendered with.
func installedMesh(t *testing.T, env *testenv.Env, namespace string) *pki.IdentityBundle {
	t.Helper()
	ctx := context.Background()
	id, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	wh, err := pki.GenerateWebhookTLS(pki.WebhookOptions{ServiceName: wellknown.ControllerName, Namespace: namespace})
	if err != nil {
		t.Fatal(err)
	}
	m := renderWith(t, namespace, meshVersion, id, wh)
	kubectl(t, env, (&render.Manifest{Objects: m.CRDs()}).YAML(), "apply", "--server-side", "-f", "-")
	kubectl(t, env, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd/"+meshConfigCRDName)
	kubectl(t, env, (&render.Manifest{Objects: m.Resources()}).YAML(), "apply", "--server-side", "-f", "-")
	// What install writes last; the installation check reads its version label.
	values := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: wellknown.ValuesSecretName, Namespace: namespace,
		Labels: map[string]string{wellknown.LabelControlPlaneNamespace: namespace, wellknown.LabelVersion: meshVersion},
	}}
	if _, err := env.Clientset().CoreV1().Secrets(namespace).Create(ctx, values, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return id
}

func kubectl(t *testing.T, env *testenv.Env, stdin []byte, args ...string) {
	t.Helper()
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", env.KubeconfigPath}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// kubelet plays the node for the controller pods until the test ends or the
// returned function is called.
func kubelet(t *testing.T, env *testenv.Env, namespace string, st testenv.PodState) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		env.RunKubelet(ctx, namespace, wellknown.LabelComponent+"="+controllerComponent, st)
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func TestCheckInstalledMesh(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Fatalf("this test applies the chart with kubectl: %v", err)
	}
	env := testenv.Shared(t)
	const ns = "mesh-installed"
	id := installedMesh(t, env, ns)
	cfg := Config{Namespace: ns}
	const podsReady = "the controller pods are ready"

	t.Run("pods not ready", func(t *testing.T) {
		stop := kubelet(t, env, ns, testenv.PodState{WaitingReason: "ImagePullBackOff", WaitingMessage: `Back-off pulling image "ghcr.io/meshctl/meshproxy"`})
		defer stop()
		start := time.Now()
		sum, out := run(t, env.Config, cfg, PostInstall(), Options{Wait: time.Minute, RetryInterval: 250 * time.Millisecond})
		if sum.Success {
			t.Fatalf("check passed with pods in ImagePullBackOff:\n%s", out)
		}
		r := result(t, sum, podsReady)
		if r.Err == nil || !strings.Contains(r.Err.Error(), "ImagePullBackOff") {
			t.Errorf("the pods check does not give the reason: %v", r.Err)
		}
		if r.TimedOut || time.Since(start) > 30*time.Second {
			t.Errorf("the run waited for a pod that cannot pull its image (%s)", time.Since(start))
		}
		for _, r := range sum.Results {
			if r.Description != podsReady && r.Err != nil {
				t.Errorf("%s: %v", r.Description, r.Err)
			}
		}
	})

	// The pods check does not wait out ImagePullBackOff, so the pods must
	// show ready before the run begins.
	if _, err := env.MarkPodsReady(context.Background(), ns, wellknown.LabelComponent+"="+controllerComponent); err != nil {
		t.Fatal(err)
	}
	kubelet(t, env, ns, testenv.PodState{Ready: true})
	t.Run("ready", func(t *testing.T) {
		counted, requests := countRequests(env.Config)
		sum, out := run(t, counted, cfg, PostInstall(), Options{Wait: time.Minute, RetryInterval: 250 * time.Millisecond})
		if !sum.Success {
			t.Fatalf("check failed on a ready mesh:\n%s", out)
		}
		for _, r := range sum.Results {
			if r.Err != nil {
				t.Errorf("%s: %v", r.Description, r.Err)
			}
		}
		// Each kind is listed once, whatever the number of checks that
		// look at it: the run stays fast on a large cluster.
		total := 0
		for req, n := range requests.counts {
			total += n
			if n > 1 {
				t.Errorf("%s requested %d times", req, n)
			}
		}
		t.Logf("%d requests", total)
	})

	t.Run("issuer from another anchor", func(t *testing.T) {
		other, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
		if err != nil {
			t.Fatal(err)
		}
		setIssuer(t, env, ns, id.TrustAnchorsPEM, other)
		defer setIssuer(t, env, ns, id.TrustAnchorsPEM, id)
		sum, out := run(t, env.Config, cfg, PostInstall(), Options{})
		r := result(t, sum, "the issuer chains to the trust anchors")
		if sum.Success || r.Err == nil {
			t.Fatalf("check passed with an issuer of another anchor:\n%s", out)
		}
	})

	t.Run("issuer expiring in 30 days", func(t *testing.T) {
		soon, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local", IssuerLifetime: 30 * 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		setIssuer(t, env, ns, soon.TrustAnchorsPEM, soon)
		defer setIssuer(t, env, ns, id.TrustAnchorsPEM, id)
		sum, out := run(t, env.Config, cfg, PostInstall(), Options{})
		r := result(t, sum, "the trust anchors and issuer are valid for at least 60 days")
		if r.Status() != StatusWarning || !strings.Contains(r.Err.Error(), "expires in 29 days") {
			t.Errorf("issuer expiring in 30 days: %s %v", r.Status(), r.Err)
		}
		if !sum.Success {
			t.Errorf("an expiry warning failed the run:\n%s", out)
		}
	})

	t.Run("version skew", func(t *testing.T) {
		skewed := cfg
		skewed.Version = "v1.0.0"
		sum, out := run(t, env.Config, skewed, PostInstall(), Options{})
		r := result(t, sum, "the control plane runs this meshctl's version")
		if r.Status() != StatusWarning || !strings.Contains(r.Err.Error(), "the control plane is "+meshVersion+" and meshctl is v1.0.0") {
			t.Errorf("version skew: %s %v", r.Status(), r.Err)
		}
		if !sum.Success {
			t.Errorf("a version warning failed the run:\n%s", out)
		}
	})

	t.Run("probes under strict mTLS", func(t *testing.T) {
		ctx := context.Background()
		kube := env.Clientset()
		const app = "mesh-installed-app"
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: app}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer kube.CoreV1().Namespaces().Delete(ctx, app, metav1.DeleteOptions{})
		probed := func(name, inbound string, port intstr.IntOrString) {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: app, Annotations: map[string]string{
					wellknown.AnnotationProxyConfig: `{"version":"bootstrap","inbound":` + inbound + `}`,
				}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "web", Image: "web", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: port}}}},
					{Name: wellknown.ProxyContainerName, Image: "meshproxy"},
				}},
			}
			if _, err := kube.CoreV1().Pods(app).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		probed("named-port", `{"address":":15101"}`, intstr.FromString("http"))
		probed("exempt", `{"address":":15101","permissiveMTLSPorts":[8080]}`, intstr.FromInt32(8080))
		probed("workload-permissive", `{"address":":15101","mtls":"permissive"}`, intstr.FromInt32(8080))
		const description = "the kubelet's probes reach meshed pods"
		appCfg := cfg
		appCfg.WorkloadNamespace = app

		// Permissive, the default: every probe gets through.
		sum, out := run(t, env.Config, appCfg, PostInstall(), Options{})
		if r := result(t, sum, description); r.Err != nil {
			t.Fatalf("a permissive mesh warns about probes:\n%s", out)
		}
		setMTLSMode(t, env, ns, "strict")
		defer setMTLSMode(t, env, ns, "")
		sum, out = run(t, env.Config, appCfg, PostInstall(), Options{})
		r := result(t, sum, description)
		if r.Status() != StatusWarning || !sum.Success {
			t.Fatalf("want a warning that does not fail the run:\n%s", out)
		}
		msg := r.Err.Error()
		if !strings.Contains(msg, "pod "+app+"/named-port (container web, readiness probe, port 8080)") || !strings.Contains(msg, wellknown.AnnotationPermissiveMTLSPorts) {
			t.Errorf("the warning does not name the probe and the way out:\n%s", msg)
		}
		for _, unwanted := range []string{"/exempt", "/workload-permissive"} {
			if strings.Contains(msg, unwanted) {
				t.Errorf("the warning names %s:\n%s", unwanted, msg)
			}
		}
	})
}

// setMTLSMode sets the MeshConfig's spec.mtls.mode ("" removes it).
func setMTLSMode(t *testing.T, env *testenv.Env, namespace, mode string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	patch := `{"spec":{"mtls":{"mode":"` + mode + `"}}}`
	if mode == "" {
		patch = `{"spec":{"mtls":null}}`
	}
	if _, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(namespace).Patch(context.Background(),
		wellknown.MeshConfigName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// setIssuer writes the trust anchors and the issuer of id into the mesh's
// ConfigMap and Secret, keeping their labels.
func setIssuer(t *testing.T, env *testenv.Env, namespace string, anchorsPEM []byte, id *pki.IdentityBundle) {
	t.Helper()
	ctx := context.Background()
	kube := env.Clientset()
	cm, err := kube.CoreV1().ConfigMaps(namespace).Get(ctx, wellknown.TrustAnchorsName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[trustAnchorsKey] = string(anchorsPEM)
	if _, err := kube.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	updateSecret(t, kube, namespace, wellknown.IdentitySecretName, map[string][]byte{
		corev1.TLSCertKey: id.IssuerCertPEM, corev1.TLSPrivateKeyKey: id.IssuerKeyPEM, caKey: anchorsPEM,
	})
}

func updateSecret(t *testing.T, kube kubernetes.Interface, namespace, name string, data map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	sec, err := kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		sec.Data[k] = v
	}
	if _, err := kube.CoreV1().Secrets(namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(fmt.Errorf("updating secret %s/%s: %w", namespace, name, err))
	}
}

type requestCounts struct {
	mu     sync.Mutex
	counts map[string]int
}

// countRequests returns a copy of cfg that counts its requests by method
// and path.
func countRequests(cfg *rest.Config) (*rest.Config, *requestCounts) {
	rc := &requestCounts{counts: map[string]int{}}
	c := rest.CopyConfig(cfg)
	c.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			rc.mu.Lock()
			rc.counts[req.Method+" "+req.URL.Path]++
			rc.mu.Unlock()
			return next.RoundTrip(req)
		})
	})
	return c, rc
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
