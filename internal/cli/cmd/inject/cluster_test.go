package inject

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/golden"
	"github.com/meshctl/mesh/internal/testenv"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{NoControllerManager: true}))
}

// kubectl runs kubectl against the env with stdin and fails the test on
// error.
func kubectl(t *testing.T, env *testenv.Env, stdin string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not on PATH")
	}
	cmd := exec.Command(path, append([]string{"--kubeconfig", env.KubeconfigPath}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ensureNamespaces creates namespaces with the default ServiceAccount that
// the admission of Pods looks up (the env runs no controller manager to
// create it).
func ensureNamespaces(t *testing.T, env *testenv.Env, names ...string) {
	t.Helper()
	ctx := context.Background()
	for _, n := range names {
		_, err := env.Clientset().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		_, err = env.Clientset().CoreV1().ServiceAccounts(n).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// TestGoldenFilesPassServerDryRun applies every injected fixture to a real
// API server with --dry-run=server: the proxy, init step, volume and
// annotation injection writes must pass the server's validation and
// defaulting, for every kind and both sidecar modes.
func TestGoldenFilesPassServerDryRun(t *testing.T) {
	env := testenv.Shared(t)
	ensureNamespaces(t, env, "default", "shop", "legacy", "monitoring", "meshctl-system", "kube-system")
	goldens, err := filepath.Glob(filepath.Join("..", "..", "..", "inject", "testdata", "*.golden.*"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, g := range goldens {
		t.Run(filepath.Base(g), func(t *testing.T) {
			if strings.HasPrefix(filepath.Base(g), "unknown-kind.") {
				t.Skip("kinds the server does not serve, left as they were")
			}
			b, err := os.ReadFile(g)
			if err != nil {
				t.Fatal(err)
			}
			out := kubectl(t, env, string(b), "apply", "--dry-run=server", "-f", "-")
			t.Logf("%s", out)
		})
	}
}

// TestProxyDefaultsFromTheCluster reads the MeshConfig from the API server,
// as `meshctl inject` does without --ignore-cluster.
func TestProxyDefaultsFromTheCluster(t *testing.T) {
	env := testenv.Shared(t)
	// The chart's CRD is tested against meshconfig.Spec elsewhere; this one
	// only has to let the object in.
	kubectl(t, env, `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: meshconfigs.meshctl.dev
spec:
  group: meshctl.dev
  scope: Namespaced
  names: {kind: MeshConfig, listKind: MeshConfigList, plural: meshconfigs, singular: meshconfig}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`, "apply", "-f", "-")
	kubectl(t, env, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/meshconfigs.meshctl.dev")
	ensureNamespaces(t, env, "mesh-from-cluster")
	kubectl(t, env, `apiVersion: meshctl.dev/v1alpha1
kind: MeshConfig
metadata:
  name: mesh
  namespace: mesh-from-cluster
spec:
  trustDomain: from-cluster.example
  identity: {certificateLifetime: 24h}
  proxy:
    image: registry.example.com/meshproxy:from-cluster
    imagePullPolicy: Always
    logLevel: warn
    resources: {requests: {cpu: 20m, memory: 30Mi}}
    uid: 2710
    inboundPort: 15101
    outboundPort: 15100
    adminPort: 15190
    nativeSidecar: true
`, "apply", "-f", "-")

	// Without the trust anchors the proxy could not get an identity.
	out, errOut, code := run(t, pod, nil, "inject", "--kubeconfig", env.KubeconfigPath, "--mesh-namespace-for-test", "mesh-from-cluster", "-")
	if code != 1 || out != "" || !strings.Contains(errOut, "meshctl-identity-trust-anchors not found") || !strings.Contains(errOut, "--trust-anchors FILE") {
		t.Errorf("without trust anchors: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	anchors, err := os.ReadFile(testAnchors)
	if err != nil {
		t.Fatal(err)
	}
	_, err = env.Clientset().CoreV1().ConfigMaps("mesh-from-cluster").Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "meshctl-identity-trust-anchors"},
		Data:       map[string]string{"ca-bundle.crt": string(anchors)},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	out, errOut, code = run(t, pod, nil, "inject", "--kubeconfig", env.KubeconfigPath, "--mesh-namespace-for-test", "mesh-from-cluster", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"image: registry.example.com/meshproxy:from-cluster",
		"imagePullPolicy: Always",
		"--log-level=warn",
		"restartPolicy: Always", // the cluster's nativeSidecar, on a 1.29+ server
		"cpu: 20m",
		`"serverIdentity":"spiffe://from-cluster.example/ns/mesh-from-cluster/sa/meshctl-controller"`,
		`"address":"meshctl-controller.mesh-from-cluster.svc:15112"`,
		`"trustAnchors":["-----BEGIN CERTIFICATE-----\nMII`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, errOut, code = run(t, pod, nil, "inject", "--kubeconfig", env.KubeconfigPath, "--mesh-namespace-for-test", "no-mesh-here", "-")
	if code != 1 || out != "" || !strings.Contains(errOut, "not installed") || !strings.Contains(errOut, "--ignore-cluster") {
		t.Errorf("without a mesh: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
}

// TestMakeLiveRenderings, with -update, applies every golden file of
// internal/inject to the test API server and writes what `kubectl get -o
// yaml` and `-o json` return for it to internal/inject/testdata/live, where
// TestLiveRenderings injects, uninjects and re-injects them: objects as
// users pipe them from the cluster, keys sorted, defaults filled in, server
// fields and all. Golden files that cannot be applied (kinds the server does
// not serve, pods with only a generateName) have none.
func TestMakeLiveRenderings(t *testing.T) {
	if !golden.Update() {
		t.Skip("regenerates internal/inject/testdata/live with -update")
	}
	env := testenv.Shared(t)
	ensureNamespaces(t, env, "default", "shop", "legacy", "monitoring", "meshctl-system", "kube-system")
	dir := filepath.Join("..", "..", "..", "inject", "testdata")
	goldens, err := filepath.Glob(filepath.Join(dir, "*.golden.*"))
	if err != nil || len(goldens) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "live"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, g := range goldens {
		name := strings.SplitN(filepath.Base(g), ".golden.", 2)[0]
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(g)
			if err != nil {
				t.Fatal(err)
			}
			if out, err := kubectlErr(env, string(b), "apply", "-f", "-"); err != nil {
				t.Logf("not applicable, no rendering: %v\n%s", err, out)
				return
			}
			asJSON := kubectl(t, env, string(b), "get", "-f", "-", "-o", "json")
			asYAML := kubectl(t, env, string(b), "get", "-f", "-", "-o", "yaml")
			golden.Check(t, filepath.Join(dir, "live", name+".yaml"), []byte(asYAML))
			golden.Check(t, filepath.Join(dir, "live", name+".json"), []byte(asJSON))
			// Fixtures share names; pods cannot be updated in place.
			var list struct {
				Kind  string `json:"kind"`
				Items []struct {
					Kind     string `json:"kind"`
					Metadata struct {
						Name      string `json:"name"`
						Namespace string `json:"namespace"`
					} `json:"metadata"`
				} `json:"items"`
			}
			if err := json.Unmarshal([]byte(asJSON), &list); err != nil {
				t.Fatal(err)
			}
			if list.Kind != "List" {
				if err := json.Unmarshal([]byte(`{"kind":"List","items":[`+asJSON+`]}`), &list); err != nil {
					t.Fatal(err)
				}
			}
			for _, it := range list.Items {
				if it.Kind == "Namespace" {
					continue
				}
				kubectl(t, env, "", "delete", "--ignore-not-found", "--grace-period=0", "--force", "--wait=false", "-n", it.Metadata.Namespace, it.Kind, it.Metadata.Name)
			}
		})
	}
}

// kubectlErr runs kubectl against the env and returns its error.
func kubectlErr(env *testenv.Env, stdin string, args ...string) (string, error) {
	path, err := exec.LookPath("kubectl")
	if err != nil {
		return "", err
	}
	cmd := exec.Command(path, append([]string{"--kubeconfig", env.KubeconfigPath}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestLiveObjectsRoundTrip is the pipe of the docs against the API server:
// kubectl get -o yaml (and -o json) | meshctl inject - | kubectl apply -f -,
// and the same through uninject, for a Deployment that is not injected yet,
// then injected.
func TestLiveObjectsRoundTrip(t *testing.T) {
	env := testenv.Shared(t)
	ensureNamespaces(t, env, "live")
	const deploy = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: live
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
      annotations: {kubectl.kubernetes.io/restartedAt: "2026-01-01T00:00:00Z"}
    spec:
      containers:
      - name: web
        image: example.com/web:1
`
	kubectl(t, env, deploy, "apply", "-f", "-")
	offline := []string{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, "-"}
	for _, format := range []string{"yaml", "json", "yaml"} {
		live := kubectl(t, env, "", "get", "-n", "live", "deploy/web", "-o", format)
		out, errOut, code := run(t, live, nil, offline...)
		if code != 0 {
			t.Fatalf("%s: inject: exit %d: %s", format, code, errOut)
		}
		t.Logf("%s: %s", format, errOut)
		kubectl(t, env, out, "apply", "-f", "-")
	}
	// Injected now, and read back: unchanged, byte for byte.
	live := kubectl(t, env, "", "get", "-n", "live", "deploy/web", "-o", "yaml")
	out, errOut, code := run(t, live, nil, offline...)
	if code != 0 || out != live || !strings.Contains(errOut, "Deployment live/web unchanged") {
		t.Errorf("re-injecting the live object: exit %d: %s", code, errOut)
	}
	for _, format := range []string{"yaml", "json"} {
		live := kubectl(t, env, "", "get", "-n", "live", "deploy/web", "-o", format)
		out, errOut, code := run(t, live, nil, "uninject", "-")
		if code != 0 {
			t.Fatalf("%s: uninject: exit %d: %s", format, code, errOut)
		}
		kubectl(t, env, out, "apply", "-f", "-")
	}
	got := kubectl(t, env, "", "get", "-n", "live", "deploy/web", "-o", "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.metadata.annotations}")
	if strings.Contains(got, "meshproxy") || !strings.Contains(got, "restartedAt") {
		t.Errorf("after uninject: %s", got)
	}
}
