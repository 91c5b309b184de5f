package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/meshctl/mesh/internal/controller/testcert"
	"github.com/meshctl/mesh/internal/controller/webhook"
	"github.com/meshctl/mesh/internal/install/render"
	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/promtext/promtexttest"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{})) }

// resources maps the kinds the test applies from the rendered chart to
// their resources.
var resources = map[string]schema.GroupVersionResource{
	"Namespace":                    {Version: "v1", Resource: "namespaces"},
	"CustomResourceDefinition":     {Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"},
	"ServiceAccount":               {Version: "v1", Resource: "serviceaccounts"},
	"Role":                         {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":                  {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"ClusterRole":                  {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
	"ClusterRoleBinding":           {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
	"MeshConfig":                   meshconfig.GroupVersionResource,
	"MutatingWebhookConfiguration": {Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"},
}

func create(ctx context.Context, t *testing.T, dyn dynamic.Interface, obj *unstructured.Unstructured) {
	t.Helper()
	gvr, ok := resources[obj.GetKind()]
	if !ok {
		t.Fatalf("no resource known for kind %s", obj.GetKind())
	}
	var err error
	if ns := obj.GetNamespace(); ns != "" {
		_, err = dyn.Resource(gvr).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
	} else {
		_, err = dyn.Resource(gvr).Create(ctx, obj, metav1.CreateOptions{})
	}
	if err != nil && !(apierrors.IsAlreadyExists(err) && obj.GetKind() == "Namespace") {
		t.Fatalf("creating %s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
}

// eventually retries f every 200 ms until it returns nil or the timeout
// passes, then fails with f's last error.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func pod(name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/shop/web:1",
			Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
		}}},
	}
}

// proxyOf returns the image of the injected proxy container, "" if none,
// and whether the interception init container is there.
func proxyOf(p *corev1.Pod) (image string, initStep bool) {
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		switch c.Name {
		case wellknown.ProxyContainerName:
			image = c.Image
		case wellknown.InitContainerName:
			initStep = true
		}
	}
	return image, initStep
}

// TestController runs the controller as a local process against the real
// API server, as the chart's ServiceAccount with the chart's Role, and lets
// the API server call its webhook over TLS with a caBundle.
func TestController(t *testing.T) {
	env := testenv.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const meshNS = "ctrl-mesh"
	kube := env.Clientset()
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}

	ca := testcert.NewCA(t)
	certPEM, keyPEM := ca.Serving(t, 2, time.Now().Add(time.Hour))
	manifest, err := render.Render(render.Options{
		Namespace: meshNS,
		Identity:  render.Identity{TrustAnchorsPEM: ca.CertPEM, IssuerCertPEM: ca.CertPEM, IssuerKeyPEM: ca.KeyPEM},
		Webhook:   render.Webhook{CABundlePEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM},
		Version:   "v0.0.0-test",
	})
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	find := func(kind, ns, name string) *unstructured.Unstructured {
		t.Helper()
		o := manifest.Find(kind, ns, name)
		if o == nil {
			t.Fatalf("the chart renders no %s %s/%s", kind, ns, name)
		}
		return o.DeepCopy()
	}
	create(ctx, t, dyn, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": meshNS}}})
	create(ctx, t, dyn, find("ServiceAccount", meshNS, wellknown.ControllerName))
	asController, err := env.ServiceAccountConfig(ctx, meshNS, wellknown.ControllerName)
	if err != nil {
		t.Fatal(err)
	}

	// The controller starts before its Role, its CRD and its certificate
	// exist, as it may while an install is being applied.
	tlsDir := t.TempDir()
	var logs testenv.Output
	defer func() {
		if t.Failed() {
			t.Logf("controller logs:\n%s", logs.String())
		}
	}()
	c, err := New(Options{
		MeshNamespace:  meshNS,
		WebhookAddress: "127.0.0.1:0",
		AdminAddress:   "127.0.0.1:0",
		WebhookTLSDir:  tlsDir,
		Kube:           asController,
		Inject:         webhook.NewInjector(meshNS, "v0.0.0-test", webhook.Static{Anchors: []string{string(ca.CertPEM)}}),
		Logger:         slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ShutdownDelay:  time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(runCtx) }()
	admin := "http://" + c.AdminAddr().String()

	// Readiness says what is missing, step by step. The informer backs off
	// between failed lists, hence the generous waits.
	notReady := func(what string, want ...string) {
		t.Helper()
		eventually(t, time.Minute, what, func() error {
			code, body, err := httpGet(admin + "/ready")
			if err != nil {
				return err
			}
			if code != 503 {
				return fmt.Errorf("/ready: %d %q, want 503", code, body)
			}
			lines := strings.Split(strings.TrimSpace(body), "\n")[1:]
			if len(lines) != len(want) {
				return fmt.Errorf("/ready: %q, want %d reasons containing %q", body, len(want), want)
			}
			for i, w := range want {
				if !strings.Contains(lines[i], w) {
					return fmt.Errorf("/ready: %q, want reasons containing %q", body, want)
				}
			}
			return nil
		})
	}
	notReady("readiness without Role, CRD and certificate",
		"meshconfig: no valid MeshConfig ctrl-mesh/mesh seen yet: listing meshconfigs.meshctl.dev in ctrl-mesh: ",
		"webhook certificate: loading the serving certificate: ",
		"discovery: waiting for the caches of services, endpointslices and pods")
	if !strings.Contains(logs.String(), "the controller's Role must allow get, list and watch") {
		t.Errorf("without its Role, the controller does not say what it lacks")
	}
	for _, kind := range []string{"Role", "RoleBinding"} {
		create(ctx, t, dyn, find(kind, meshNS, wellknown.ControllerName))
	}
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
		create(ctx, t, dyn, find(kind, "", wellknown.ControllerName))
	}
	testcert.WriteSecretDir(t, tlsDir, certPEM, keyPEM)
	notReady("readiness without the CRD", "(is the MeshConfig CRD installed?)")
	for _, crd := range manifest.CRDs() {
		create(ctx, t, dyn, crd)
	}
	eventually(t, time.Minute, "readiness without the MeshConfig", func() error {
		const want = "not ready:\nmeshconfig: no valid MeshConfig ctrl-mesh/mesh seen yet\n"
		if code, body, err := httpGet(admin + "/ready"); err != nil || code != 503 || body != want {
			return fmt.Errorf("/ready: %d %q %v, want 503 %q", code, body, err, want)
		}
		return nil
	})
	if code, _, err := httpGet(admin + "/live"); err != nil || code != 200 {
		t.Fatalf("/live: %d %v", code, err)
	}

	mc := find("MeshConfig", meshNS, wellknown.MeshConfigName)
	create(ctx, t, dyn, mc)
	eventually(t, 30*time.Second, "waiting for /ready", func() error {
		code, body, err := httpGet(admin + "/ready")
		if err == nil && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})

	// The chart's webhook configuration, pointed at the local process.
	wh := find("MutatingWebhookConfiguration", "", wellknown.WebhookName)
	hooks, _, _ := unstructured.NestedSlice(wh.Object, "webhooks")
	hook := hooks[0].(map[string]any)
	hook["clientConfig"] = map[string]any{"url": "https://" + c.WebhookAddr().String() + webhook.Path, "caBundle": hook["clientConfig"].(map[string]any)["caBundle"]}
	hook["failurePolicy"] = "Fail" // a broken webhook fails the test loudly instead of admitting bare pods
	unstructured.SetNestedSlice(wh.Object, hooks, "webhooks")
	create(ctx, t, dyn, wh)
	defer kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), wellknown.WebhookName, metav1.DeleteOptions{})

	meshed, plain := newNamespace(ctx, t, kube, "ctrl-meshed", true), newNamespace(ctx, t, kube, "ctrl-plain", false)
	image := mc.Object["spec"].(map[string]any)["proxy"].(map[string]any)["image"].(string)

	// The API server picks up a new webhook configuration within a few
	// seconds; dry runs show when (sideEffects: None allows them).
	eventually(t, 30*time.Second, "waiting for the webhook to be called", func() error {
		p, err := kube.CoreV1().Pods(meshed).Create(ctx, pod("probe", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		if img, _ := proxyOf(p); img == "" {
			return fmt.Errorf("pod not injected")
		}
		return nil
	})

	t.Run("pod in a meshed namespace is injected", func(t *testing.T) {
		if _, err := kube.CoreV1().Pods(meshed).Create(ctx, pod("web", nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		stored, err := kube.CoreV1().Pods(meshed).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		img, initStep := proxyOf(stored)
		if img != image || !initStep {
			t.Errorf("stored pod: proxy image %q, init step %v; want %q and true", img, initStep, image)
		}
		if _, ok := stored.Annotations[wellknown.AnnotationInjected]; !ok {
			t.Errorf("stored pod lacks the %s annotation: %v", wellknown.AnnotationInjected, stored.Annotations)
		}
	})
	t.Run("pod in an unlabelled namespace is untouched", func(t *testing.T) {
		stored, err := kube.CoreV1().Pods(plain).Create(ctx, pod("web", nil), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img, initStep := proxyOf(stored); img != "" || initStep || len(stored.Spec.Containers) != 1 {
			t.Errorf("stored pod was injected: %+v", stored.Spec)
		}
	})
	t.Run("opted-out pod is untouched", func(t *testing.T) {
		stored, err := kube.CoreV1().Pods(meshed).Create(ctx, pod("batch", map[string]string{wellknown.AnnotationInject: wellknown.InjectDisabled}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if img, initStep := proxyOf(stored); img != "" || initStep || len(stored.Spec.Containers) != 1 {
			t.Errorf("stored pod was injected: %+v", stored.Spec)
		}
		if !strings.Contains(logs.String(), "allowing unchanged") {
			t.Error("no log line says why the pod was left alone")
		}
	})
	t.Run("a MeshConfig change applies to the next pod", func(t *testing.T) {
		const newImage = "registry.example/meshctl/meshproxy:v9.9.9"
		cur, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(meshNS).Get(ctx, wellknown.MeshConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		unstructured.SetNestedField(cur.Object, newImage, "spec", "proxy", "image")
		if _, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(meshNS).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "waiting for the new proxy image", func() error {
			p, err := kube.CoreV1().Pods(meshed).Create(ctx, pod("web-2", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				return err
			}
			if img, _ := proxyOf(p); img != newImage {
				return fmt.Errorf("proxy image %q, want %q", img, newImage)
			}
			return nil
		})
	})
	t.Run("an invalid MeshConfig update keeps the last valid one", func(t *testing.T) {
		const badImage = "registry.example/meshctl/meshproxy:bad"
		cur, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(meshNS).Get(ctx, wellknown.MeshConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The CRD's schema accepts 30s; Spec.Validate does not.
		unstructured.SetNestedField(cur.Object, "30s", "spec", "identity", "certificateLifetime")
		unstructured.SetNestedField(cur.Object, badImage, "spec", "proxy", "image")
		if _, err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(meshNS).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "waiting for the rejection", func() error {
			_, body, err := httpGet(admin + "/metrics")
			if err == nil && !strings.Contains(body, "meshctl_controller_meshconfig_invalid 1\n") {
				err = fmt.Errorf("no rejection in /metrics yet")
			}
			return err
		})
		if code, body, err := httpGet(admin + "/ready"); err != nil || code != 200 {
			t.Errorf("/ready after an invalid update: %d %q %v; want 200 with the last valid MeshConfig", code, body, err)
		}
		p, err := kube.CoreV1().Pods(meshed).Create(ctx, pod("web-3", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if img, _ := proxyOf(p); img == badImage || img == "" {
			t.Errorf("proxy image %q after an invalid update; want the last valid one", img)
		}
		if !strings.Contains(logs.String(), "spec.identity.certificateLifetime: 30s is shorter than the minimum of 1m0s") {
			t.Error("no log line names the invalid field")
		}
	})
	t.Run("metrics count the decisions", func(t *testing.T) {
		code, body, err := httpGet(admin + "/metrics")
		if err != nil || code != 200 {
			t.Fatalf("/metrics: %d %v", code, err)
		}
		promtexttest.Parse(t, body)
		for _, want := range []string{
			`meshctl_controller_webhook_requests_total{result="skipped"} 1`,
			`meshctl_controller_webhook_requests_total{result="error"} 0`,
			"meshctl_controller_meshconfig_loaded 1",
		} {
			if !strings.Contains(body, want+"\n") {
				t.Errorf("/metrics lacks %q:\n%s", want, body)
			}
		}
		if strings.Contains(body, `meshctl_controller_webhook_requests_total{result="injected"} 0`) {
			t.Errorf("/metrics counts no injection:\n%s", body)
		}
	})
	t.Run("a deleted MeshConfig leaves the last valid one in use", func(t *testing.T) {
		if err := dyn.Resource(meshconfig.GroupVersionResource).Namespace(meshNS).Delete(ctx, wellknown.MeshConfigName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "waiting for the deletion to be seen", func() error {
			if !strings.Contains(logs.String(), "MeshConfig deleted") {
				return fmt.Errorf("no log line about the deletion")
			}
			return nil
		})
		if code, body, err := httpGet(admin + "/ready"); err != nil || code != 200 {
			t.Errorf("/ready after the deletion: %d %q %v; want 200", code, body, err)
		}
		p, err := kube.CoreV1().Pods(meshed).Create(ctx, pod("web-4", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if img, _ := proxyOf(p); img == "" {
			t.Error("pod not injected after the MeshConfig was deleted")
		}
	})
	t.Run("a rotated certificate is served without a restart", func(t *testing.T) {
		certPEM, keyPEM := ca.Serving(t, 3, time.Now().Add(2*time.Hour))
		testcert.WriteSecretDir(t, tlsDir, certPEM, keyPEM)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca.CertPEM)
		conn, err := tls.Dial("tcp", c.WebhookAddr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); serial != 3 {
			t.Errorf("serving certificate serial %d, want the rotated one, 3", serial)
		}
		p, err := kube.CoreV1().Pods(meshed).Create(ctx, pod("web-5", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if img, _ := proxyOf(p); img == "" {
			t.Error("pod not injected after the rotation")
		}
	})
	t.Run("pprof is for loopback peers", func(t *testing.T) {
		if code, _, err := httpGet(admin + "/debug/pprof/"); err != nil || code != 200 {
			t.Errorf("/debug/pprof/ from loopback: %d %v", code, err)
		}
	})

	// SIGTERM: readiness fails at once while the webhook still serves for
	// the shutdown delay, then Run returns.
	stop()
	eventually(t, 500*time.Millisecond, "waiting for readiness to fail", func() error {
		code, body, err := httpGet(admin + "/ready")
		if err == nil && (code != 503 || !strings.Contains(body, "shutting down")) {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	if conn, err := tls.Dial("tcp", c.WebhookAddr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}); err != nil {
		t.Errorf("webhook during the shutdown delay: %v", err)
	} else {
		conn.Close()
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the context ended")
	}
}

// newNamespace creates a namespace, labelled for injection if meshed, and
// waits for its default ServiceAccount, without which pods are refused.
func newNamespace(ctx context.Context, t *testing.T, kube kubernetes.Interface, name string, meshed bool) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if meshed {
		ns.Labels = map[string]string{wellknown.LabelInject: wellknown.InjectEnabled}
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kube.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	eventually(t, 30*time.Second, "waiting for the default ServiceAccount of "+name, func() error {
		_, err := kube.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	return name
}
