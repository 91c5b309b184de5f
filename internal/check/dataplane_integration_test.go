package check

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

// A pod that started without the proxy in an injection-enabled namespace is
// named with the command that recreates it; opted-out, host-network and
// finished pods, pods of another mesh, and pods elsewhere, are not.
func TestUninjectedPodsAreNamed(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	kube := env.Clientset()
	const meshed, plain = "dp-meshed", "dp-plain"
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: meshed, Labels: map[string]string{wellknown.LabelInject: wellknown.InjectEnabled}}},
		{ObjectMeta: metav1.ObjectMeta{Name: plain}},
	} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{}) })
	}
	pod := func(ns, name string, mutate func(*corev1.Pod)) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}
		if mutate != nil {
			mutate(p)
		}
		phase := p.Status.Phase
		created, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if phase != "" {
			created.Status.Phase = phase
			if _, err := kube.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A Deployment's pod, made by the real controller manager (a made-up
	// owner would be garbage-collected).
	one := int32(1)
	labels := map[string]string{"app": "web"}
	web := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: meshed},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web"}}}}},
	}
	if _, err := kube.AppsV1().Deployments(meshed).Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var webPod string
	for deadline := time.Now().Add(time.Minute); webPod == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		list, err := kube.CoreV1().Pods(meshed).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) > 0 {
			webPod = list.Items[0].Name
		}
	}
	if webPod == "" {
		t.Fatal("the controller manager made no pod for Deployment web in a minute")
	}
	pod(meshed, "bare", nil)
	pod(meshed, "injected", func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: wellknown.ProxyContainerName, Image: "meshproxy"})
	})
	pod(meshed, "opted-out", func(p *corev1.Pod) {
		p.Annotations = map[string]string{wellknown.AnnotationInject: wellknown.InjectDisabled}
	})
	pod(meshed, "host", func(p *corev1.Pod) { p.Spec.HostNetwork = true })
	// Pods of another mesh, which the webhook leaves alone on purpose.
	pod(meshed, "istio", func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxyv2"})
	})
	pod(meshed, "linkerd", func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "linkerd-init", Image: "proxy-init"}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "linkerd-proxy", Image: "proxy"})
	})
	pod(meshed, "job-done", func(p *corev1.Pod) {
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Status.Phase = corev1.PodSucceeded
	})
	pod(plain, "elsewhere", nil)

	cats := []Category{kubernetesAPI(), dataPlane()}
	sum, out := run(t, env.Config, Config{Namespace: "dp-mesh"}, cats, Options{})
	r := result(t, sum, "pods in injection-enabled namespaces run the proxy")
	if r.Err == nil || r.Status() != StatusWarning || !sum.Success {
		t.Fatalf("want a warning that does not fail the run:\n%s", out)
	}
	msg := r.Err.Error()
	for _, want := range []string{
		"2 pods in namespaces labelled meshctl.dev/inject=enabled run without the proxy",
		"pod dp-meshed/bare", "pod dp-meshed/" + webPod,
		"kubectl rollout restart -n dp-meshed deployment/web",
		"kubectl delete pod -n dp-meshed bare",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the warning lacks %q:\n%s", want, msg)
		}
	}
	for _, unwanted := range []string{"injected", "opted-out", "host", "istio", "linkerd", "job-done", "elsewhere"} {
		if strings.Contains(msg, "/"+unwanted) {
			t.Errorf("the warning names pod %s:\n%s", unwanted, msg)
		}
	}

	// -n limits the check to the workloads' namespace.
	sum, out = run(t, env.Config, Config{Namespace: "dp-mesh", WorkloadNamespace: plain}, cats, Options{})
	if r := result(t, sum, "pods in injection-enabled namespaces run the proxy"); r.Err != nil {
		t.Errorf("with -n %s, pods of %s were reported:\n%s", plain, meshed, out)
	}
}

// During a trust-anchor rotation, a running pod injected before the new
// anchor was added is named: after a restart its proxy could not verify a
// controller whose certificate chains to the new anchor.
func TestPodsLackingACurrentAnchorAreNamed(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	kube := env.Clientset()
	const meshNS, appNS = "dp-anchors-mesh", "dp-anchors-app"
	current, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	old, err := pki.GenerateIdentity(pki.IdentityOptions{TrustDomain: "cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{meshNS, appNS} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	}
	if _, err := kube.CoreV1().ConfigMaps(meshNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: wellknown.TrustAnchorsName, Labels: map[string]string{wellknown.LabelControlPlaneNamespace: meshNS}},
		Data:       map[string]string{trustAnchorsKey: string(current.TrustAnchorsPEM)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	bootstrap := func(anchors ...[]byte) string {
		b := meshapi.Bootstrap{Address: "meshctl-controller." + meshNS + ".svc:15112"}
		for _, a := range anchors {
			b.TrustAnchors = append(b.TrustAnchors, string(a))
		}
		doc, _ := json.Marshal(map[string]any{"version": "bootstrap", "controller": b})
		return string(doc)
	}
	meshed := func(name, config string, phase corev1.PodPhase) {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: appNS},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{
				{Name: "app", Image: "app"}, {Name: wellknown.ProxyContainerName, Image: "meshproxy"},
			}},
		}
		if config != "" {
			p.Annotations = map[string]string{wellknown.AnnotationProxyConfig: config}
		}
		created, err := kube.CoreV1().Pods(appNS).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if phase != "" {
			created.Status.Phase = phase
			if _, err := kube.CoreV1().Pods(appNS).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	meshed("current", bootstrap(current.TrustAnchorsPEM), "")
	meshed("overlap", bootstrap(old.TrustAnchorsPEM, current.TrustAnchorsPEM), "")
	meshed("stale", bootstrap(old.TrustAnchorsPEM), "")
	meshed("stale-done", bootstrap(old.TrustAnchorsPEM), corev1.PodSucceeded)
	meshed("no-bootstrap", "", "")

	const description = "meshed pods trust every current trust anchor"
	sum, out := run(t, env.Config, Config{Namespace: meshNS, WorkloadNamespace: appNS}, []Category{kubernetesAPI(), dataPlane()}, Options{})
	r := result(t, sum, description)
	if r.Err == nil || r.Status() != StatusWarning || !sum.Success {
		t.Fatalf("want a warning that does not fail the run:\n%s", out)
	}
	msg := r.Err.Error()
	for _, want := range []string{"1 meshed pod lacks a current trust anchor", "pod " + appNS + "/stale\n", "kubectl delete pod -n " + appNS + " stale"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the warning lacks %q:\n%s", want, msg)
		}
	}
	for _, unwanted := range []string{"/current", "/overlap", "/stale-done", "/no-bootstrap"} {
		if strings.Contains(msg, unwanted) {
			t.Errorf("the warning names %s:\n%s", unwanted, msg)
		}
	}
}
