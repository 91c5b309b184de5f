package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/cli/command"
)

// run executes `meshctl inject` or `meshctl uninject` with args over buffers
// and returns stdout, stderr and the exit code as cli.Main would.
func run(t *testing.T, stdin string, client *http.Client, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	f := command.NewFactory(command.Streams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	cmd := NewCmd(f, func(ctx context.Context, o *Options) error {
		o.HTTPClient = func() (*http.Client, error) { return client, nil }
		return Run(ctx, o)
	})
	if args[0] == "uninject" {
		cmd = NewUninjectCmd(f, func(ctx context.Context, o *UninjectOptions) error {
			o.HTTPClient = func() (*http.Client, error) { return client, nil }
			return RunUninject(ctx, o)
		})
	}
	// The root command owns kubectl's flags and --mesh-namespace; tests
	// register them here.
	f.KubeFlags.AddFlags(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVar(&f.MeshNamespace, "mesh-namespace-for-test", f.MeshNamespace, "")
	cmd.SetArgs(args[1:])
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(context.Background())
	if err != nil {
		errOut.WriteString("Error: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), command.CodeOf(err)
}

// testAnchors is the fixtures' trust anchors.
var testAnchors = filepath.Join("..", "..", "..", "inject", "testdata", "trust-anchors.pem")

const pod = `apiVersion: v1
kind: Pod
metadata:
  name: app # comment kept
  namespace: shop
spec:
  containers:
  - name: app
    image: example.com/app:1
`

const service = `apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  ports:
  - port: 80
`

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestInjectFilesDirectoriesAndStdin(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a.yaml"), pod, 0o644)
	write(t, filepath.Join(dir, "sub", "b.yml"), service, 0o644)
	write(t, filepath.Join(dir, "sub", "notes.txt"), "not a manifest", 0o644)

	out, errOut, code := run(t, pod, nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, dir, "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if n := strings.Count(out, "kind: Pod"); n != 2 {
		t.Errorf("%d pods in the output, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "kind: Service") || strings.Contains(out, "not a manifest") {
		t.Errorf("the directory was not read as expected:\n%s", out)
	}
	if !strings.Contains(out, "name: app # comment kept") {
		t.Errorf("comment lost:\n%s", out)
	}
	for _, want := range []string{filepath.Join(dir, "a.yaml") + ": document 1, line 1: Pod shop/app injected", "-: document 1, line 1: Pod shop/app injected"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("report lacks %q:\n%s", want, errOut)
		}
	}

	// uninject of the whole output gives back the inputs, joined.
	back, errOut, code := run(t, out, nil, "uninject", "-")
	if code != 0 {
		t.Fatalf("uninject: exit %d: %s", code, errOut)
	}
	if want := pod + "---\n" + service + "---\n" + pod; back != want {
		t.Errorf("uninject gave\n%s\nwant\n%s", back, want)
	}
}

func TestBadInputWritesNothing(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	write(t, good, pod, 0o644)
	write(t, bad, "apiVersion: v1\nkind: ConfigMap\n---\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: 1\n", 0o644)
	for _, args := range [][]string{
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, good, bad},
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, "--in-place", good, bad},
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, good, filepath.Join(dir, "missing.yaml")},
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, good, "http://example.com/app.yaml"},
	} {
		out, errOut, code := run(t, "", nil, args...)
		if code != command.ExitFailure {
			t.Errorf("%v: exit %d, want 1", args, code)
		}
		if out != "" {
			t.Errorf("%v: wrote to stdout:\n%s", args, out)
		}
		if got, _ := os.ReadFile(good); string(got) != pod {
			t.Errorf("%v: good.yaml was changed", args)
		}
		t.Logf("%v: %s", args, errOut)
	}
	_, errOut, _ := run(t, "", nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, good, bad)
	if want := bad + ": document 2 (line 4): Deployment \"x\" has no pod template: spec.template is missing"; !strings.Contains(errOut, want) {
		t.Errorf("error %q does not contain %q", errOut, want)
	}
}

func TestInPlace(t *testing.T) {
	dir := t.TempDir()
	exec := filepath.Join(dir, "pod.yaml")
	svc := filepath.Join(dir, "svc.yaml")
	write(t, exec, pod, 0o600)
	write(t, svc, service, 0o644)
	svcInfo, _ := os.Stat(svc)

	out, errOut, code := run(t, "", nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, "--in-place", dir)
	if code != 0 || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	got, _ := os.ReadFile(exec)
	if !strings.Contains(string(got), "meshctl.dev/injected") {
		t.Errorf("pod.yaml not injected:\n%s", got)
	}
	if st, _ := os.Stat(exec); st.Mode().Perm() != 0o600 {
		t.Errorf("pod.yaml mode %v, want 0600", st.Mode().Perm())
	}
	if st, _ := os.Stat(svc); !st.ModTime().Equal(svcInfo.ModTime()) {
		t.Errorf("svc.yaml, which needs no change, was rewritten")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	if _, errOut, code := run(t, "", nil, "uninject", "--in-place", exec); code != 0 {
		t.Fatalf("uninject: exit %d: %s", code, errOut)
	}
	if got, _ := os.ReadFile(exec); string(got) != pod {
		t.Errorf("uninject --in-place gave\n%s", got)
	}
}

func TestURL(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/app.yaml" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(pod))
	}))
	defer srv.Close()

	out, errOut, code := run(t, "", srv.Client(), "inject", "--ignore-cluster", "--trust-anchors", testAnchors, srv.URL+"/app.yaml")
	if code != 0 || !strings.Contains(out, "name: meshproxy") {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	out, errOut, code = run(t, "", srv.Client(), "inject", "--ignore-cluster", "--trust-anchors", testAnchors, srv.URL+"/missing.yaml")
	if code != 1 || out != "" || !strings.Contains(errOut, "404") {
		t.Errorf("missing URL: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	// A client that does not trust the server's certificate fails.
	out, errOut, code = run(t, "", &http.Client{}, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, srv.URL+"/app.yaml")
	if code != 1 || out != "" || !strings.Contains(errOut, "certificate") {
		t.Errorf("untrusted URL: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
}

func TestJSONOutputAndReport(t *testing.T) {
	out, errOut, code := run(t, pod, nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, "-o", "json", "--report-format", "json", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var obj struct {
		Kind string `json:"kind"`
		Spec struct {
			Containers []struct{ Name string } `json:"containers"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(out), &obj); err != nil || obj.Kind != "Pod" || len(obj.Spec.Containers) != 2 || obj.Spec.Containers[0].Name != "meshproxy" {
		t.Errorf("output %v %+v:\n%s", err, obj, out)
	}
	var rep []ReportEntry
	if err := json.Unmarshal([]byte(errOut), &rep); err != nil || len(rep) != 1 || rep[0].Input != "-" || rep[0].Outcome != "injected" {
		t.Errorf("report %v %+v:\n%s", err, rep, errOut)
	}

	out, _, code = run(t, pod+"---\n"+service, nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, "-o", "json", "-")
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || list.Kind != "List" || len(list.Items) != 2 {
		t.Errorf("two documents as JSON: exit %d, %v:\n%s", code, err, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"inject"},
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, "-o", "toml", "-"},
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, "--in-place", "-"},
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, "--in-place", "-o", "json", "x.yaml"},
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, "-", "-"},
		{"inject", "--ignore-cluster", "--trust-anchors", testAnchors, "--report-format", "xml", "-"},
	} {
		if _, errOut, code := run(t, pod, nil, args...); code != command.ExitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut)
		}
	}
}

func TestUnreachableClusterSuggestsIgnoreCluster(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	write(t, kubeconfig, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, 0o600)
	out, errOut, code := run(t, pod, nil, "inject", "--kubeconfig", kubeconfig, "-")
	if code != 1 || out != "" || !strings.Contains(errOut, "--ignore-cluster with --trust-anchors FILE") {
		t.Errorf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
}

func TestNamespaceLabelFromAnotherInput(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "00-namespace.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    meshctl.dev/inject: disabled\n", 0o644)
	write(t, filepath.Join(dir, "10-pod.yaml"), pod, 0o644)
	out, errOut, code := run(t, "", nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, dir)
	if code != 0 || strings.Contains(out, "meshproxy") || !strings.Contains(errOut, "namespace shop opted out") {
		t.Errorf("exit %d: %s\n%s", code, errOut, out)
	}
}

func TestOfflineWithoutTrustAnchorsNamesTheFlag(t *testing.T) {
	out, errOut, code := run(t, pod, nil, "inject", "--ignore-cluster", "-")
	if code != command.ExitUsage || out != "" || !strings.Contains(errOut, "--trust-anchors FILE") {
		t.Errorf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	bad := filepath.Join(t.TempDir(), "ca.crt")
	write(t, bad, "not a certificate\n", 0o644)
	out, errOut, code = run(t, pod, nil, "inject", "--ignore-cluster", "--trust-anchors", bad, "-")
	if code != command.ExitFailure || out != "" || !strings.Contains(errOut, "no PEM-encoded certificate") {
		t.Errorf("bad anchors: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
}

func TestTrustDomainFlag(t *testing.T) {
	out, errOut, code := run(t, pod, nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, "--trust-domain", "prod.example", "-")
	if code != 0 || !strings.Contains(out, `spiffe://prod.example/ns/meshctl-system/sa/meshctl-controller`) {
		t.Errorf("exit %d: %s\n%s", code, errOut, out)
	}
}

const job = `apiVersion: batch/v1
kind: Job
metadata:
  name: once
  namespace: shop
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: busybox:1.36
`

func TestJobsGetANativeSidecarWhereTheClusterHasThem(t *testing.T) {
	offline := []string{"inject", "--ignore-cluster", "--trust-anchors", testAnchors}
	for _, tt := range []struct {
		version string
		native  bool
		warning string
	}{
		{"", true, "the cluster's version is unknown"},
		{"1.33.1", true, ""},
		{"v1.29.0", true, ""},
		{"1.28.5", false, "so the Job will not complete"},
	} {
		args := offline
		if tt.version != "" {
			args = append(args, "--kubernetes-version", tt.version)
		}
		out, errOut, code := run(t, job, nil, append(args, "-")...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", tt.version, code, errOut)
		}
		if got := strings.Contains(out, "restartPolicy: Always"); got != tt.native {
			t.Errorf("%q: native sidecar %t, want %t:\n%s", tt.version, got, tt.native, out)
		}
		if tt.warning == "" && strings.Contains(errOut, "warning") || !strings.Contains(errOut, tt.warning) {
			t.Errorf("%q: report %q, want warning %q", tt.version, errOut, tt.warning)
		}
	}
	if _, errOut, code := run(t, job, nil, append(offline, "--kubernetes-version", "latest", "-")...); code != command.ExitUsage {
		t.Errorf("--kubernetes-version latest: exit %d: %s", code, errOut)
	}
	// The JSON report carries the warning.
	_, errOut, _ := run(t, job, nil, append(offline, "--kubernetes-version", "1.28", "--report-format", "json", "-")...)
	var rep []ReportEntry
	if err := json.Unmarshal([]byte(errOut), &rep); err != nil || len(rep) != 1 || !strings.Contains(rep[0].Warning, "will not complete") {
		t.Errorf("JSON report %v: %s", err, errOut)
	}
}

func TestUnknownKindIsReported(t *testing.T) {
	in := strings.Replace(pod, "kind: Pod", "kind: Podd", 1)
	out, errOut, code := run(t, in, nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, "--report-format", "json", "-")
	if code != 0 || out != in {
		t.Fatalf("exit %d: %s\n%s", code, errOut, out)
	}
	var rep []ReportEntry
	if err := json.Unmarshal([]byte(errOut), &rep); err != nil || len(rep) != 1 || rep[0].Outcome != "skipped" || !strings.Contains(rep[0].Reason, `kind "Podd" is not one inject knows (did you mean Pod?)`) {
		t.Errorf("report %v: %s", err, errOut)
	}
	_, errOut, _ = run(t, in, nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, "-")
	if !strings.Contains(errOut, "-: document 1, line 1: Podd shop/app skipped: kind \"Podd\"") {
		t.Errorf("text report: %s", errOut)
	}
}

func TestEmptyContainersIsAnError(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\nspec:\n  containers: []\n"
	out, errOut, code := run(t, in, nil, "inject", "--ignore-cluster", "--trust-anchors", testAnchors, "-")
	if code != command.ExitFailure || out != "" || !strings.Contains(errOut, "spec.containers is empty") {
		t.Errorf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
}
