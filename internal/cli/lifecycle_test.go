package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/install"
	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/version"
	"github.com/meshctl/mesh/internal/wellknown"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }

// meshctl runs the CLI in process against env, as a user at a terminal would
// (but with plain streams), and returns its streams and exit code.
type result struct {
	stdout, stderr string
	code           int
}

func meshctl(t *testing.T, env *testenv.Env, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	s := command.Streams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}
	args = append(args, "--kubeconfig", env.KubeconfigPath, "--cache-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code := Main(ctx, args, s, func(string) string { return "" })
	t.Logf("meshctl %s -> %d\nstderr:\n%s", strings.Join(args, " "), code, errOut.String())
	return result{out.String(), errOut.String(), code}
}

func TestInstallDryRunPassesServerValidation(t *testing.T) {
	env := testenv.Shared(t)
	r := meshctl(t, env, "", "install", "--dry-run", "--mesh-namespace", "dryrun-mesh")
	if r.code != 0 {
		t.Fatalf("install --dry-run: exit %d", r.code)
	}
	if strings.Contains(r.stdout, "PRIVATE KEY-----\n") {
		// The issuer key is in the manifests, base64-encoded inside a Secret,
		// never as readable PEM text in a ConfigMap or label.
		t.Fatalf("a private key appears in clear in the manifests")
	}
	// A server-side dry run cannot see what it only pretends to create: the
	// namespace's objects need the namespace, the MeshConfig needs its CRD
	// served. So, as on a fresh cluster, those two go first for real.
	first := exec.Command("kubectl", "--kubeconfig", env.KubeconfigPath, "apply", "--server-side", "-f", "-")
	first.Stdin = strings.NewReader(onlyKind(t, r.stdout, "Namespace") + "\n---\n" + onlyKind(t, r.stdout, "CustomResourceDefinition"))
	if out, err := first.CombinedOutput(); err != nil {
		t.Fatalf("applying the namespace and CRD: %v\n%s", err, out)
	}
	defer cleanup(t, env, "namespace", "dryrun-mesh")
	defer cleanup(t, env, "crd", "meshconfigs.meshctl.dev")
	waitForCRD(t, env)
	cmd := exec.Command("kubectl", "--kubeconfig", env.KubeconfigPath, "apply", "--dry-run=server", "-f", "-")
	cmd.Stdin = strings.NewReader(r.stdout)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply --dry-run=server rejected the manifests: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "(server dry run)"); n < 10 {
		t.Fatalf("kubectl validated only %d objects:\n%s", n, out)
	}
}

// onlyKind returns the documents of a YAML stream that are of kind.
func onlyKind(t *testing.T, stream, kind string) string {
	var docs []string
	for _, d := range strings.Split(stream, "\n---\n") {
		if strings.Contains(d, "\nkind: "+kind+"\n") || strings.HasPrefix(d, "kind: "+kind+"\n") {
			docs = append(docs, d)
		}
	}
	if len(docs) == 0 {
		t.Fatalf("no %s in the stream", kind)
	}
	return strings.Join(docs, "\n---\n")
}

func waitForCRD(t *testing.T, env *testenv.Env) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		cmd := exec.Command("kubectl", "--kubeconfig", env.KubeconfigPath, "get", "meshconfigs", "-A")
		if cmd.Run() == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("the MeshConfig CRD was not served in 30s")
}

func cleanup(t *testing.T, env *testenv.Env, kind, name string) {
	cmd := exec.Command("kubectl", "--kubeconfig", env.KubeconfigPath, "delete", kind, name, "--wait=true", "--timeout=2m")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("deleting %s %s: %v\n%s", kind, name, err, out)
	}
}

// The lifecycle shares one cluster and runs in order: each step starts from
// what the previous one left.
func TestLifecycle(t *testing.T) {
	env := testenv.Shared(t)
	ctx := t.Context()
	kube := env.Clientset()
	const ns = "mesh-lifecycle"

	t.Run("install times out naming the pod that is not ready and why", func(t *testing.T) {
		kctx, stop := context.WithCancel(ctx)
		defer stop()
		go env.RunKubelet(kctx, ns, "", testenv.PodState{WaitingReason: "ImagePullBackOff", WaitingMessage: `Back-off pulling image "ghcr.io/meshctl/meshproxy:dev"`})
		r := meshctl(t, env, "", "install", "--mesh-namespace", ns, "--wait", "8s")
		if r.code != command.ExitTimeout {
			t.Fatalf("exit %d, want %d (timeout)", r.code, command.ExitTimeout)
		}
		for _, want := range []string{"not ready after 8s", "meshctl-controller", "ImagePullBackOff", "Back-off pulling image"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("stderr lacks %q", want)
			}
		}
		if r.stdout != "" {
			t.Errorf("install wrote to stdout: %q", r.stdout)
		}
	})

	t.Run("install over an existing mesh is refused", func(t *testing.T) {
		r := meshctl(t, env, "", "install", "--mesh-namespace", ns, "--wait", "0")
		if r.code != command.ExitRefused || !strings.Contains(r.stderr, "meshctl upgrade") {
			t.Fatalf("exit %d, want %d with a pointer to upgrade", r.code, command.ExitRefused)
		}
	})

	t.Run("uninstall of the timed-out install leaves nothing", func(t *testing.T) {
		r := meshctl(t, env, "", "uninstall", "--mesh-namespace", ns, "--wait", "2m")
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		assertNothingOwned(t, env, ns)
	})

	// Install from a rendering that holds two extra objects, one of them
	// cluster-scoped, which the upgrade with the real chart must prune.
	extraCM := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: metav1.ObjectMeta{Name: "retired-config", Namespace: ns}}
	extraCR := &rbacv1.ClusterRole{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}, ObjectMeta: metav1.ObjectMeta{Name: "meshctl-retired-role"}}
	var anchorsAtInstall string

	t.Run("install applies, records and waits for readiness", func(t *testing.T) {
		kctx, stop := context.WithCancel(ctx)
		defer stop()
		go env.RunKubelet(kctx, ns, "", testenv.PodState{Ready: true})
		c := clientsFor(t, env)
		withExtras := func(ro render.Options) (*render.Manifest, error) {
			m, err := render.Render(ro)
			if err != nil {
				return nil, err
			}
			labels := m.Find("Namespace", "", ns).GetLabels()
			for _, obj := range []any{extraCM, extraCR} {
				u := toUnstructured(t, obj)
				u.SetLabels(labels)
				m.Objects = append(m.Objects, u)
			}
			return m, nil
		}
		_, err := install.Install(ctx, c, install.Options{Namespace: ns, Version: version.Get().Version, Values: map[string]any{"controller": map[string]any{"logLevel": "debug"}}, Wait: 2 * time.Minute, Render: withExtras})
		if err != nil {
			t.Fatalf("install: %v", err)
		}
		inst, err := install.Find(ctx, kube, ns)
		if err != nil {
			t.Fatalf("finding the installation: %v", err)
		}
		if got := inst.Values["controller"]; got == nil {
			t.Errorf("stored values lack the user's controller.logLevel: %v", inst.Values)
		}
		if strings.Contains(fmt.Sprint(inst.Values), "BEGIN") {
			t.Errorf("stored values carry credentials: %v", inst.Values)
		}
		cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, wellknown.TrustAnchorsName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		anchorsAtInstall = cm.Data["ca-bundle.crt"]
		r := meshctl(t, env, "", "version", "-o", "json", "--mesh-namespace", ns)
		if r.code != 0 || !strings.Contains(r.stdout, `"controlPlane"`) {
			t.Fatalf("version does not report the control plane: %s", r.stdout)
		}
	})

	t.Run("upgrade --dry-run shows the diff and changes nothing", func(t *testing.T) {
		r := meshctl(t, env, "", "upgrade", "--dry-run", "--mesh-namespace", ns, "--set", "controller.replicas=2")
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		for _, want := range []string{"# prune ConfigMap " + ns + "/retired-config", "# prune ClusterRole meshctl-retired-role", "# update Deployment " + ns + "/meshctl-controller", "+  replicas: 2"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("diff lacks %q:\n%s", want, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "PRIVATE KEY") {
			t.Errorf("the diff shows a private key")
		}
		if _, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "retired-config", metav1.GetOptions{}); err != nil {
			t.Errorf("dry run deleted the extra ConfigMap: %v", err)
		}
	})

	t.Run("upgrade applies, keeps the identity and values, prunes only what the mesh owns", func(t *testing.T) {
		// A look-alike the mesh does not own: same kind, no ownership label.
		foreign := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "users-config", Namespace: ns}}
		if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		kctx, stop := context.WithCancel(ctx)
		defer stop()
		go env.RunKubelet(kctx, ns, "", testenv.PodState{Ready: true})
		r := meshctl(t, env, "", "upgrade", "--mesh-namespace", ns, "--set", "controller.replicas=2", "--wait", "2m")
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		if _, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "retired-config", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the retired ConfigMap was not pruned: %v", err)
		}
		if _, err := kube.RbacV1().ClusterRoles().Get(ctx, "meshctl-retired-role", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the retired ClusterRole was not pruned: %v", err)
		}
		if _, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "users-config", metav1.GetOptions{}); err != nil {
			t.Errorf("upgrade deleted a ConfigMap the mesh does not own: %v", err)
		}
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, wellknown.ControllerName, metav1.GetOptions{})
		if err != nil || *d.Spec.Replicas != 2 {
			t.Fatalf("replicas not raised to 2: %v", err)
		}
		if !strings.Contains(strings.Join(d.Spec.Template.Spec.Containers[0].Args, " "), "--log-level=debug") {
			t.Errorf("the stored value controller.logLevel=debug was lost: %v", d.Spec.Template.Spec.Containers[0].Args)
		}
		cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, wellknown.TrustAnchorsName, metav1.GetOptions{})
		if err != nil || cm.Data["ca-bundle.crt"] != anchorsAtInstall {
			t.Errorf("upgrade replaced the trust anchors")
		}
		r = meshctl(t, env, "", "upgrade", "--dry-run", "--mesh-namespace", ns)
		if r.code != 0 || strings.Contains(r.stdout, "# ") {
			t.Errorf("a second upgrade is not a no-op:\n%s", r.stdout)
		}
	})

	t.Run("uninstall refuses while pods are injected, keeps CRDs with foreign resources, removes the mesh's finalizers", func(t *testing.T) {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The injected pod would make every later uninstall in this
		// cluster refuse.
		t.Cleanup(func() { cleanup(t, env, "namespace", "app") })
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app", Annotations: map[string]string{wellknown.AnnotationInjected: `{"version":"dev"}`}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}, {Name: wellknown.ProxyContainerName, Image: "meshproxy"}}},
		}
		if _, err := kube.CoreV1().Pods("app").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		dyn := dynamic.NewForConfigOrDie(env.Config)
		users := toUnstructured(t, &meshconfig.MeshConfig{
			TypeMeta:   metav1.TypeMeta{APIVersion: wellknown.APIGroup + "/" + meshconfig.Version, Kind: meshconfig.Kind},
			ObjectMeta: metav1.ObjectMeta{Name: "users-own", Namespace: "app"},
			Spec:       meshconfig.Default("example/meshproxy:v1"),
		})
		if _, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace("app").Create(ctx, users, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating a user's MeshConfig: %v", err)
		}
		mc, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(ns).Get(ctx, wellknown.MeshConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mc.SetFinalizers([]string{wellknown.Domain + "/test-cleanup"})
		if _, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(ns).Update(ctx, mc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}

		r := meshctl(t, env, "", "uninstall", "--mesh-namespace", ns)
		if r.code != command.ExitRefused || !strings.Contains(r.stderr, "Pod app/web") {
			t.Fatalf("exit %d, want %d naming Pod app/web", r.code, command.ExitRefused)
		}
		r = meshctl(t, env, "", "uninstall", "--dry-run", "--mesh-namespace", ns)
		if r.code != 0 || !strings.Contains(r.stdout, "Deployment "+ns+"/meshctl-controller") || !strings.Contains(r.stdout, "MutatingWebhookConfiguration meshctl-proxy-injector") {
			t.Fatalf("dry run does not list the mesh's objects:\n%s", r.stdout)
		}
		if strings.Contains(r.stdout, "CustomResourceDefinition") || !strings.Contains(r.stderr, "keeping CustomResourceDefinition meshconfigs.meshctl.dev") {
			t.Errorf("the CRD holding a user's MeshConfig is not kept")
		}
		r = meshctl(t, env, "", "uninstall", "--force", "--mesh-namespace", ns, "--wait", "2m")
		if r.code != 0 {
			t.Fatalf("uninstall --force: exit %d", r.code)
		}
		assertNothingOwned(t, env, ns, "CustomResourceDefinition meshconfigs.meshctl.dev")
		if _, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace("app").Get(ctx, "users-own", metav1.GetOptions{}); err != nil {
			t.Errorf("uninstall without --purge deleted a user's MeshConfig: %v", err)
		}
	})

	t.Run("uninstall --purge removes the CRD, and a second run is harmless", func(t *testing.T) {
		r := meshctl(t, env, "", "uninstall", "--purge", "--force", "--mesh-namespace", ns, "--wait", "2m")
		if r.code != 0 {
			t.Fatalf("exit %d", r.code)
		}
		assertNothingOwned(t, env, ns)
		r = meshctl(t, env, "", "uninstall", "--mesh-namespace", ns)
		if r.code != 0 || !strings.Contains(r.stderr, "nothing of the mesh is installed") {
			t.Fatalf("second uninstall: exit %d", r.code)
		}
	})
}

// assertNothingOwned fails when any object labelled as the mesh's in ns is
// left, except those named in allowed ("Kind name").
func assertNothingOwned(t *testing.T, env *testenv.Env, ns string, allowed ...string) {
	t.Helper()
	c := clientsFor(t, env)
	plan, err := install.PlanUninstall(t.Context(), c, install.UninstallOptions{Namespace: ns, Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range plan.Objects {
		ok := false
		for _, a := range allowed {
			ok = ok || r.String() == a
		}
		if !ok {
			t.Errorf("left behind: %s", r)
		}
	}
}

func clientsFor(t *testing.T, env *testenv.Env) *install.Clients {
	t.Helper()
	dc := discovery.NewDiscoveryClientForConfigOrDie(env.Config)
	return &install.Clients{
		Kube:    env.Clientset(),
		Dynamic: dynamic.NewForConfigOrDie(env.Config),
		Mapper:  restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
	}
}

func toUnstructured(t *testing.T, obj any) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// An install that fails half way (here: the real API server rejects an
// object in the middle of the rendering) reports what it applied, and
// running install again finishes the job with the identity CA of the first
// run.
func TestInstallFinishesAfterAFailureHalfWay(t *testing.T) {
	env := testenv.Shared(t)
	ctx := t.Context()
	const ns = "mesh-partial"
	c := clientsFor(t, env)
	broken := func(ro render.Options) (*render.Manifest, error) {
		m, err := render.Render(ro)
		if err != nil {
			return nil, err
		}
		bad := toUnstructured(t, &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: metav1.ObjectMeta{Name: "Not_A_Valid_Name", Namespace: ns}})
		at := len(m.Objects) / 2
		m.Objects = append(m.Objects[:at], append([]*unstructured.Unstructured{bad}, m.Objects[at:]...)...)
		return m, nil
	}
	_, err := install.Install(ctx, c, install.Options{Namespace: ns, Version: version.Get().Version, Render: broken})
	var partial *install.PartialError
	if !errors.As(err, &partial) || len(partial.Applied) == 0 || len(partial.Applied) >= partial.Total {
		t.Fatalf("want a partial failure listing what was applied, got %v", err)
	}
	if _, err := install.Find(ctx, env.Clientset(), ns); !errors.Is(err, install.ErrNotInstalled) {
		t.Fatalf("a failed install left the installation record behind: %v", err)
	}
	anchors, err := env.Clientset().CoreV1().ConfigMaps(ns).Get(ctx, wellknown.TrustAnchorsName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the first run did not apply the trust anchors before failing: %v", err)
	}

	r := meshctl(t, env, "", "install", "--mesh-namespace", ns, "--wait", "0")
	if r.code != 0 {
		t.Fatalf("re-running install: exit %d", r.code)
	}
	again, err := env.Clientset().CoreV1().ConfigMaps(ns).Get(ctx, wellknown.TrustAnchorsName, metav1.GetOptions{})
	if err != nil || again.Data["ca-bundle.crt"] != anchors.Data["ca-bundle.crt"] {
		t.Errorf("the re-run replaced the identity CA the first run applied")
	}
	if r := meshctl(t, env, "", "uninstall", "--purge", "--mesh-namespace", ns, "--wait", "2m"); r.code != 0 {
		t.Fatalf("uninstall: exit %d", r.code)
	}
}

// An upgrade that finds the identity CA gone must not make a new one: every
// running proxy trusts the old anchors, and would be cut off.
func TestUpgradeRefusesToReplaceAMissingIdentity(t *testing.T) {
	env := testenv.Shared(t)
	ctx := t.Context()
	const ns = "mesh-lost-ca"
	if r := meshctl(t, env, "", "install", "--mesh-namespace", ns, "--wait", "0"); r.code != 0 {
		t.Fatalf("install: exit %d", r.code)
	}
	defer meshctl(t, env, "", "uninstall", "--purge", "--mesh-namespace", ns, "--wait", "2m")
	issuer, err := env.Clientset().CoreV1().Secrets(ns).Get(ctx, wellknown.IdentitySecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Clientset().CoreV1().ConfigMaps(ns).Delete(ctx, wellknown.TrustAnchorsName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r := meshctl(t, env, "", "upgrade", "--mesh-namespace", ns, "--wait", "0")
	if r.code != command.ExitFailure || !strings.Contains(r.stderr, "the identity CA") || !strings.Contains(r.stderr, "is missing") {
		t.Fatalf("exit %d; want a failure saying the identity CA is missing", r.code)
	}
	after, err := env.Clientset().CoreV1().Secrets(ns).Get(ctx, wellknown.IdentitySecretName, metav1.GetOptions{})
	if err != nil || string(after.Data["tls.crt"]) != string(issuer.Data["tls.crt"]) {
		t.Errorf("the refused upgrade changed the issuer")
	}
}

// Uninstall deletes the mesh's namespace only when install created it; a
// namespace that was there before keeps what it held, and loses only the
// mesh's labels.
func TestUninstallDeletesOnlyTheNamespaceInstallCreated(t *testing.T) {
	env := testenv.Shared(t)
	ctx := t.Context()
	kube := env.Clientset()

	t.Run("a namespace that existed is kept", func(t *testing.T) {
		const ns = "mesh-preexisting"
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": "payments"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cleanup(t, env, "namespace", ns) })
		users := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "users-data", Namespace: ns}}
		if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, users, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if r := meshctl(t, env, "", "install", "--mesh-namespace", ns, "--wait", "0"); r.code != 0 {
			t.Fatalf("install: exit %d", r.code)
		}
		live, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if live.Labels[install.LabelNamespaceCreated] != "" || live.Labels[wellknown.LabelControlPlaneNamespace] != ns {
			t.Fatalf("labels after install: %v", live.Labels)
		}
		r := meshctl(t, env, "", "uninstall", "--dry-run", "--mesh-namespace", ns)
		if r.code != 0 || strings.Contains(r.stdout, "Namespace "+ns) || !strings.Contains(r.stderr, "keeping namespace "+ns) {
			t.Fatalf("dry run: exit %d, would delete the namespace or does not say it keeps it:\n%s", r.code, r.stdout)
		}
		if r := meshctl(t, env, "", "uninstall", "--purge", "--mesh-namespace", ns, "--wait", "2m"); r.code != 0 {
			t.Fatalf("uninstall: exit %d", r.code)
		}
		live, err = kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil || live.DeletionTimestamp != nil {
			t.Fatalf("uninstall deleted a namespace it did not create: %v", err)
		}
		if _, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "users-data", metav1.GetOptions{}); err != nil {
			t.Errorf("uninstall deleted the user's ConfigMap: %v", err)
		}
		for k := range live.Labels {
			if strings.HasPrefix(k, wellknown.Domain+"/") {
				t.Errorf("the kept namespace still has the mesh's label %s", k)
			}
		}
		if live.Labels["team"] != "payments" {
			t.Errorf("uninstall removed the user's label: %v", live.Labels)
		}
		assertNothingOwned(t, env, ns)
	})

	t.Run("a namespace install created is marked, kept so by upgrade, and deleted", func(t *testing.T) {
		const ns = "mesh-created"
		if r := meshctl(t, env, "", "install", "--mesh-namespace", ns, "--wait", "0"); r.code != 0 {
			t.Fatalf("install: exit %d", r.code)
		}
		if r := meshctl(t, env, "", "upgrade", "--mesh-namespace", ns, "--wait", "0"); r.code != 0 {
			t.Fatalf("upgrade: exit %d", r.code)
		}
		live, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil || live.Labels[install.LabelNamespaceCreated] != "true" {
			t.Fatalf("the namespace install created is not marked after an upgrade: %v %v", err, live.Labels)
		}
		r := meshctl(t, env, "", "uninstall", "--dry-run", "--mesh-namespace", ns)
		if !strings.Contains(r.stdout, "Namespace "+ns) {
			t.Fatalf("dry run does not list the namespace:\n%s", r.stdout)
		}
		if r := meshctl(t, env, "", "uninstall", "--purge", "--mesh-namespace", ns, "--wait", "2m"); r.code != 0 {
			t.Fatalf("uninstall: exit %d", r.code)
		}
		live, err = kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err == nil && live.DeletionTimestamp == nil {
			t.Errorf("uninstall kept the namespace install created")
		} else if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	})
}

// A Job's finished pods keep the proxy in their spec but run nothing:
// uninstall does not count them.
func TestUninstallIgnoresFinishedPods(t *testing.T) {
	env := testenv.Shared(t)
	ctx := t.Context()
	kube := env.Clientset()
	const ns, apps = "mesh-jobs", "jobs-app"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: apps}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanup(t, env, "namespace", apps) })
	for _, phase := range []corev1.PodPhase{corev1.PodSucceeded, corev1.PodFailed} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "migrate-" + strings.ToLower(string(phase)), Namespace: apps, Annotations: map[string]string{wellknown.AnnotationInjected: `{"version":"dev"}`}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{
				{Name: "migrate", Image: "migrate"}, {Name: wellknown.ProxyContainerName, Image: "meshproxy"},
			}},
		}
		created, err := kube.CoreV1().Pods(apps).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status.Phase = phase
		if _, err := kube.CoreV1().Pods(apps).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if r := meshctl(t, env, "", "install", "--mesh-namespace", ns, "--wait", "0"); r.code != 0 {
		t.Fatalf("install: exit %d", r.code)
	}
	r := meshctl(t, env, "", "uninstall", "--purge", "--mesh-namespace", ns, "--wait", "2m")
	if r.code != 0 {
		t.Fatalf("uninstall refused because of finished pods: exit %d\n%s", r.code, r.stderr)
	}
}

// -n and --mesh-namespace complete with the cluster's namespaces.
func TestNamespacesCompleteFromTheCluster(t *testing.T) {
	env := testenv.Shared(t)
	for _, flag := range []string{"-n", "--mesh-namespace"} {
		var out, errOut bytes.Buffer
		s := command.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
		args := []string{"__complete", "check", "--kubeconfig", env.KubeconfigPath, "--cache-dir", t.TempDir(), flag, ""}
		if code := Main(t.Context(), args, s, func(string) string { return "" }); code != 0 {
			t.Fatalf("%s: exit %d: %s", flag, code, errOut.String())
		}
		for _, want := range []string{"\ndefault\n", "\nkube-system\n"} {
			if !strings.Contains("\n"+out.String(), want) {
				t.Errorf("%s does not complete %q:\n%s", flag, strings.TrimSpace(want), out.String())
			}
		}
	}
}
