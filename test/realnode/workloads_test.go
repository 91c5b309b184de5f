package realnode

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/podstatus"
	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

// apiManifest is the third workload of the app namespace, as a user keeps
// it in a file: injected by `meshctl inject`, not by the webhook. Its own
// ServiceAccount gives it an identity of its own.
const apiManifest = `apiVersion: v1
kind: ServiceAccount
metadata:
  name: api
---
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  selector:
    app: api
  ports:
    - name: http
      port: 80
      targetPort: http
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  replicas: 1
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      serviceAccountName: api
      containers:
        - name: api
          image: ` + testenv.AppImageName + `
          imagePullPolicy: Never
          ports:
            - name: http
              containerPort: 8080
          readinessProbe:
            httpGet:
              path: /healthz
              port: 8080
            periodSeconds: 1
`

// jobManifest is a Job whose one request goes through the mesh to url;
// it completes only if its pod's proxy lets it finish.
func jobManifest(name, url string) string {
	return `apiVersion: batch/v1
kind: Job
metadata:
  name: ` + name + `
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: work
          image: ` + testenv.AppImageName + `
          imagePullPolicy: Never
          args: ["get", "` + url + `"]
`
}

// pipeline runs cmds with each one's standard output piped into the next
// one's standard input, as a shell's `a | b | c` does, the first reading
// stdin. It returns the last one's standard output and each one's standard
// error; err names the first command that failed.
func pipeline(ctx context.Context, stdin string, cmds ...[]string) (out string, stderrs []string, err error) {
	var procs []*exec.Cmd
	errBufs := make([]bytes.Buffer, len(cmds))
	var last bytes.Buffer
	var in io.Reader = strings.NewReader(stdin)
	var closers []io.Closer
	for i, args := range cmds {
		c := exec.CommandContext(ctx, args[0], args[1:]...)
		c.Stdin, c.Stderr = in, &errBufs[i]
		if i == len(cmds)-1 {
			c.Stdout = &last
		} else {
			r, w, err := os.Pipe()
			if err != nil {
				return "", nil, err
			}
			c.Stdout, in = w, r
			closers = append(closers, r, w)
		}
		procs = append(procs, c)
	}
	for _, c := range procs {
		if err := c.Start(); err != nil {
			return "", nil, err
		}
	}
	// The parent's copies of the pipe ends close, so that each reader sees
	// the end of its input when its writer exits.
	for _, c := range closers {
		c.Close()
	}
	for i, c := range procs {
		if werr := c.Wait(); werr != nil && err == nil {
			err = fmt.Errorf("%s: %w", cmds[i][0], werr)
		}
	}
	for i := range errBufs {
		stderrs = append(stderrs, errBufs[i].String())
	}
	return last.String(), stderrs, err
}

// kubectl returns the argument list of kubectl against the env.
func (m *mesh) kubectl(args ...string) []string {
	return append([]string{"kubectl", "--kubeconfig", m.env.KubeconfigPath}, args...)
}

// meshctlArgs returns the argument list of meshctl against the env.
func (m *mesh) meshctlArgs(args ...string) []string {
	return append([]string{m.meshctl, "--kubeconfig", m.env.KubeconfigPath}, args...)
}

// injectAndApply runs `meshctl inject - | kubectl apply -f -` on manifest
// and returns meshctl's report.
func (m *mesh) injectAndApply(t *testing.T, ctx context.Context, ns, manifest string) string {
	t.Helper()
	out, errs, err := pipeline(ctx, manifest, m.meshctlArgs("inject", "-"), m.kubectl("-n", ns, "apply", "-f", "-"))
	if err != nil {
		t.Fatalf("meshctl inject - | kubectl apply -f -: %v\nmeshctl: %s\nkubectl: %s%s", err, errs[0], errs[1], out)
	}
	return errs[0]
}

// liveInject runs `kubectl get <what> -o <format> | meshctl inject - [| kubectl apply -f -]`
// and returns meshctl's report and kubectl apply's output.
func (m *mesh) liveInject(t *testing.T, ctx context.Context, ns, what, format string, apply bool) (report, applied string) {
	t.Helper()
	cmds := [][]string{m.kubectl("-n", ns, "get", what, "-o", format), m.meshctlArgs("inject", "-")}
	if apply {
		cmds = append(cmds, m.kubectl("-n", ns, "apply", "-f", "-"))
	}
	out, errs, err := pipeline(ctx, "", cmds...)
	if err != nil {
		t.Fatalf("kubectl get %s -o %s | meshctl inject - (apply %v): %v\n%q", what, format, apply, err, errs)
	}
	return errs[1], out
}

// readyPod waits until the one pod that selector selects in ns, other than
// the pod named replaced, is Ready, with no other pod of it left running,
// and returns it.
func (m *mesh) readyPod(t *testing.T, ctx context.Context, ns, selector, replaced string) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	poll(t, ctx, 3*time.Minute, "the pod "+selector+" Ready", func(ctx context.Context) (bool, error) {
		pods, err := m.env.Clientset().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		var ready []corev1.Pod
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || p.Name == replaced {
				continue
			}
			if !podstatus.Ready(&p) {
				return false, nil
			}
			ready = append(ready, p)
		}
		if len(ready) != 1 {
			return false, nil
		}
		pod = ready[0]
		return true, nil
	})
	return pod
}

// proxies counts the proxy containers of p, and says whether one of them
// is a native sidecar (an init container with restartPolicy Always).
func proxies(p *corev1.Pod) (n int, native bool) {
	for _, c := range p.Spec.Containers {
		if c.Name == wellknown.ProxyContainerName {
			n++
		}
	}
	for _, c := range p.Spec.InitContainers {
		if c.Name == wellknown.ProxyContainerName {
			n++
			native = c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	return n, native
}

// execGet runs `testapp get url` in container c of the pod, and returns
// its output.
func (m *mesh) execGet(ctx context.Context, ns, pod, c, url string) (string, error) {
	out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns,
		"exec", pod, "-c", c, "--", "/usr/local/bin/testapp", "get", url).CombinedOutput()
	return string(out), err
}

// checkInjectedByMeshctl is the third workload: `meshctl inject | kubectl
// apply` of a file, in the namespace where the webhook injects the two
// others. Its pod becomes Ready with one proxy (the webhook leaves a pod
// that carries the injection alone), and its traffic to and from the
// webhook-injected pods is mutual TLS: each server's proxy hands the
// client's SPIFFE id to the application. Read back from the API server and
// injected again, it is unchanged, in YAML and JSON, and applied it leaves
// the pod template as it was.
func (m *mesh) checkInjectedByMeshctl(t *testing.T, ctx context.Context, ns string, began time.Time) {
	t.Helper()
	pod := m.readyPod(t, ctx, ns, "app=api", "")
	t.Logf("meshctl-injected pod Ready %s after it was applied", time.Since(began).Round(100*time.Millisecond))
	if n, _ := proxies(&pod); n != 1 {
		t.Errorf("pod %s has %d proxy containers, want 1", pod.Name, n)
	}
	if !podstatus.RunsProxy(&pod) {
		t.Errorf("pod %s does not run the proxy", pod.Name)
	}

	defaultID := "spiffe://cluster.local/ns/" + ns + "/sa/default"
	apiID := "spiffe://cluster.local/ns/" + ns + "/sa/api"
	var out string
	var err error
	poll(t, ctx, time.Minute, "an answer from http://api/ in the client pod", func(ctx context.Context) (bool, error) {
		out, err = m.execGet(ctx, ns, "client", "client", "http://api/")
		return err == nil, nil
	})
	if !strings.Contains(out, "hello from "+pod.Name) || !strings.Contains(out, "client id: "+defaultID+"\n") {
		t.Errorf("GET http://api/ from the client pod = %q, want an answer of %s with the client's identity %s", out, pod.Name, defaultID)
	}
	out, err = m.execGet(ctx, ns, pod.Name, "api", "http://web/")
	if err != nil || !strings.HasPrefix(out, "hello from web") || !strings.Contains(out, "client id: "+apiID+"\n") {
		t.Errorf("GET http://web/ from the api pod = %q, %v; want web's answer with the api's identity %s", out, err, apiID)
	}

	// Read back, the injected Deployment is what injecting it again would
	// give: nothing to do, and applying it starts no rollout.
	before, err := m.env.Clientset().AppsV1().Deployments(ns).Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"yaml", "json"} {
		report, applied := m.liveInject(t, ctx, ns, "deploy/api", format, format == "yaml")
		if want := "Deployment " + ns + "/api unchanged"; !strings.Contains(report, want) {
			t.Errorf("kubectl get deploy/api -o %s | meshctl inject -: report %q, want %q", format, report, want)
		}
		if format == "yaml" && !strings.Contains(applied, "deployment.apps/api") {
			t.Errorf("kubectl apply of the re-injected api: %q", applied)
		}
	}
	after, err := m.env.Clientset().AppsV1().Deployments(ns).Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// kubectl apply of what kubectl get printed bumps the generation by
	// itself, with or without meshctl in the pipe; a rollout starts only
	// when the pod template changes.
	if !equality.Semantic.DeepEqual(before.Spec.Template, after.Spec.Template) {
		t.Errorf("applying the re-injected api changed its pod template:\nbefore %+v\nafter %+v", before.Spec.Template, after.Spec.Template)
	}
}

// checkLiveInjection injects a live Deployment that the webhook serves
// (its template has no injection, its pods do): `kubectl get -o yaml |
// meshctl inject - | kubectl apply -f -` rolls it out with the injection in
// its template, its new pod is Ready with one proxy and serves the client
// over mutual TLS, and a second pass reports it unchanged.
func (m *mesh) checkLiveInjection(t *testing.T, ctx context.Context, ns, name, clientID string) {
	t.Helper()
	old := m.readyPod(t, ctx, ns, "app="+name, "")
	began := time.Now()
	report, applied := m.liveInject(t, ctx, ns, "deploy/"+name, "yaml", true)
	if want := "Deployment " + ns + "/" + name + " injected"; !strings.Contains(report, want) || strings.Contains(report, "replaced") {
		t.Errorf("kubectl get deploy/%s -o yaml | meshctl inject -: report %q, want %q", name, report, want)
	}
	if !strings.Contains(applied, "deployment.apps/"+name+" configured") {
		t.Errorf("kubectl apply of the injected %s: %q", name, applied)
	}
	if out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns,
		"rollout", "status", "deploy/"+name, "--timeout=3m").CombinedOutput(); err != nil {
		m.dumpPods(t, ns)
		t.Fatalf("rollout of the injected %s: %v\n%s", name, err, out)
	}
	pod := m.readyPod(t, ctx, ns, "app="+name, old.Name)
	t.Logf("live %s injected and rolled out in %s", name, time.Since(began).Round(100*time.Millisecond))
	d, err := m.env.Clientset().AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Spec.Template.Annotations[wellknown.AnnotationInjected]; !ok {
		t.Errorf("Deployment %s has no %s annotation in its template after the live injection", name, wellknown.AnnotationInjected)
	}
	if _, ok := pod.Annotations[wellknown.AnnotationInjected]; !ok {
		t.Errorf("pod %s has no %s annotation", pod.Name, wellknown.AnnotationInjected)
	}
	if n, _ := proxies(&pod); n != 1 {
		t.Errorf("pod %s has %d proxy containers, want 1", pod.Name, n)
	}
	var out string
	poll(t, ctx, time.Minute, "an answer of the new "+name+" pod", func(ctx context.Context) (bool, error) {
		out, err = m.execGet(ctx, ns, "client", "client", "http://"+name+"/")
		return err == nil && strings.Contains(out, "hello from "+pod.Name), nil
	})
	if !strings.Contains(out, "client id: "+clientID+"\n") {
		t.Errorf("GET http://%s/ from the client pod = %q, want the client's identity %s", name, out, clientID)
	}
	report, _ = m.liveInject(t, ctx, ns, "deploy/"+name, "yaml", false)
	if want := "Deployment " + ns + "/" + name + " unchanged"; !strings.Contains(report, want) {
		t.Errorf("injecting the live %s a second time: report %q, want %q", name, report, want)
	}
}

// startJobs creates, in namespace ns (labelled for injection), a Job that
// the webhook injects and one injected by `meshctl inject | kubectl
// apply`, each sending one request to url through the mesh.
func (m *mesh) startJobs(t *testing.T, ctx context.Context, ns, url string) []string {
	t.Helper()
	cs := m.env.Clientset()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{wellknown.LabelInject: wellknown.InjectEnabled},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, time.Minute, "the default ServiceAccount of "+ns, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	create := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns, "create", "-f", "-")
	create.Stdin = strings.NewReader(jobManifest("by-webhook", url))
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("creating Job by-webhook: %v\n%s", err, out)
	}
	report := m.injectAndApply(t, ctx, ns, jobManifest("by-meshctl", url))
	if want := "Job by-meshctl injected"; !strings.Contains(report, want) {
		t.Errorf("meshctl inject of Job by-meshctl: report %q, want %q", report, want)
	}
	if strings.Contains(report, "warning") {
		t.Errorf("meshctl inject of a Job on Kubernetes %s warns: %q", testenv.KubeVersion, report)
	}
	return []string{"by-webhook", "by-meshctl"}
}

// checkJobsComplete waits for the Jobs of startJobs: each completes, its
// pod Succeeded, with the proxy as a native sidecar that stopped with it,
// and its request went over mutual TLS.
func (m *mesh) checkJobsComplete(t *testing.T, ctx context.Context, ns string, jobs []string, began time.Time) {
	t.Helper()
	cs := m.env.Clientset()
	for _, name := range jobs {
		poll(t, ctx, 3*time.Minute, "Job "+name+" complete", func(ctx context.Context) (bool, error) {
			j, err := cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range j.Status.Conditions {
				if c.Status != corev1.ConditionTrue {
					continue
				}
				switch c.Type {
				case batchv1.JobComplete:
					return true, nil
				case batchv1.JobFailed:
					m.dumpPods(t, ns)
					return false, fmt.Errorf("Job %s failed: %s: %s", name, c.Reason, c.Message)
				}
			}
			return false, nil
		})
		t.Logf("Job %s complete %s after it was created", name, time.Since(began).Round(100*time.Millisecond))
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + name})
		if err != nil {
			t.Fatal(err)
		}
		var done *corev1.Pod
		for i := range pods.Items {
			if pods.Items[i].Status.Phase == corev1.PodSucceeded {
				done = &pods.Items[i]
			}
		}
		if done == nil {
			t.Errorf("Job %s complete but no pod Succeeded", name)
			continue
		}
		if n, native := proxies(done); n != 1 || !native {
			t.Errorf("pod %s of Job %s: %d proxies, native sidecar %v; want one native sidecar", done.Name, name, n, native)
		}
		for _, s := range append(append([]corev1.ContainerStatus{}, done.Status.InitContainerStatuses...), done.Status.ContainerStatuses...) {
			if s.State.Terminated == nil {
				t.Errorf("pod %s of Job %s Succeeded with container %s not terminated: %+v", done.Name, name, s.Name, s.State)
			}
		}
		out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", ns,
			"logs", done.Name, "-c", "work").CombinedOutput()
		if want := "client id: spiffe://cluster.local/ns/" + ns + "/sa/default"; err != nil || !strings.Contains(string(out), want) {
			t.Errorf("the log of Job %s: %v: %q, want %q", name, err, out, want)
		}
	}
}

// uninjectedCheck is the description of `meshctl check`'s data-plane check.
const uninjectedCheck = "pods in injection-enabled namespaces run the proxy"

// checkUninjectedPodReported creates a pod while the controller, and so
// the webhook (at address webhook), is scaled to 0: the API server creates it without the
// proxy (failure policy Ignore), and once the controller is back `meshctl
// check` names it instead of passing.
func (m *mesh) checkUninjectedPodReported(t *testing.T, ctx context.Context, ns, webhook string) {
	t.Helper()
	began := time.Now()
	cs := m.env.Clientset()
	scale := func(n int) {
		if out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", wellknown.DefaultMeshNamespace,
			"scale", "deploy/"+wellknown.ControllerName, fmt.Sprintf("--replicas=%d", n)).CombinedOutput(); err != nil {
			t.Fatalf("scaling the controller to %d: %v\n%s", n, err, out)
		}
	}
	ctrl, err := cs.CoreV1().Pods(wellknown.DefaultMeshNamespace).List(ctx, metav1.ListOptions{LabelSelector: wellknown.LabelComponent + "=controller"})
	if err != nil {
		t.Fatal(err)
	}
	scale(0)
	// Scaled down, the controller pod took about 30 s (its grace period)
	// to go; what matters here is only that nothing serves the webhook:
	// neither its ClusterIP nor the old pods, to which the API server may
	// keep a connection open.
	if out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", m.env.KubeconfigPath, "-n", wellknown.DefaultMeshNamespace,
		"delete", "pod", "-l", wellknown.LabelComponent+"=controller", "--grace-period=0", "--force").CombinedOutput(); err != nil {
		t.Fatalf("deleting the controller pods: %v\n%s", err, out)
	}
	addrs := []string{webhook}
	for _, p := range ctrl.Items {
		if p.Status.PodIP != "" {
			addrs = append(addrs, net.JoinHostPort(p.Status.PodIP, fmt.Sprint(wellknown.ControllerWebhookPort)))
		}
	}
	for _, addr := range addrs {
		poll(t, ctx, 2*time.Minute, "the webhook unreachable at "+addr, func(ctx context.Context) (bool, error) {
			c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return true, nil
			}
			c.Close()
			return false, nil
		})
	}
	late := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "late", Image: testenv.AppImageName, ImagePullPolicy: corev1.PullNever, Args: []string{"sleep"},
		}}},
	}
	created, err := cs.CoreV1().Pods(ns).Create(ctx, late, metav1.CreateOptions{})
	scale(1)
	if err != nil {
		t.Fatalf("creating a pod while the webhook is down: %v", err)
	}
	if podstatus.RunsProxy(created) {
		t.Fatalf("pod late was injected while the controller was scaled to 0")
	}
	out, err := m.run(ctx, "check", "--wait=2m")
	t.Logf("meshctl check, with pod %s/late uninjected (%s after scaling to 0):\n%s", ns, time.Since(began).Round(100*time.Millisecond), out)
	if err != nil {
		t.Errorf("meshctl check fails on a warning: %v", err)
	}
	for _, want := range []string{"pod " + ns + "/late", "kubectl delete pod -n " + ns + " late"} {
		if !strings.Contains(out, want) {
			t.Errorf("meshctl check does not say %q", want)
		}
	}
	if strings.Contains(out, "√ "+uninjectedCheck) {
		t.Errorf("meshctl check passes %q with pod %s/late uninjected", uninjectedCheck, ns)
	}
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "late", metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
}
