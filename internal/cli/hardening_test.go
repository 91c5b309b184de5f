package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/command"
)

// run runs meshctl in process with the environment env and no kubeconfig
// unless args name one.
func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	s := command.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	code := Main(context.Background(), args, s, func(k string) string { return env[k] })
	return result{out.String(), errOut.String(), code}
}

// noKubeconfig is an environment in which client-go finds no cluster: a
// KUBECONFIG naming a file that does not exist, and not in a pod.
func noKubeconfig(t *testing.T) map[string]string {
	missing := filepath.Join(t.TempDir(), "no-such-kubeconfig")
	t.Setenv("KUBECONFIG", missing)
	return map[string]string{"KUBECONFIG": missing}
}

// unreachableKubeconfig names an API server that refuses connections.
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster:
    server: https://127.0.0.1:1
- name: elsewhere
  cluster:
    server: https://127.0.0.1:2
contexts:
- name: nowhere
  context: {cluster: nowhere, user: nobody}
- name: staging
  context: {cluster: elsewhere, user: nobody}
current-context: nowhere
users:
- name: nobody
  user: {token: none}
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Kubernetes' own namespaces, and names that are not namespace names, are
// refused before anything is rendered or sent: exit 2, saying why.
func TestMeshNamespaceIsChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--dry-run", "--mesh-namespace", "kube-system"}, "one of Kubernetes' own namespaces"},
		{[]string{"install", "--dry-run", "--mesh-namespace", "default"}, "one of Kubernetes' own namespaces"},
		{[]string{"install", "--dry-run", "--mesh-namespace", "kube-public"}, "one of Kubernetes' own namespaces"},
		{[]string{"install", "--dry-run", "--mesh-namespace", "kube-node-lease"}, "one of Kubernetes' own namespaces"},
		{[]string{"install", "--mesh-namespace", "kube-system"}, "one of Kubernetes' own namespaces"},
		{[]string{"upgrade", "--mesh-namespace", "kube-system"}, "one of Kubernetes' own namespaces"},
		{[]string{"install", "--dry-run", "--mesh-namespace", "My_NS"}, "lower-case letters"},
		{[]string{"upgrade", "--mesh-namespace", "My_NS"}, "lower-case letters"},
		{[]string{"uninstall", "--mesh-namespace", "My_NS"}, "lower-case letters"},
		{[]string{"check", "--mesh-namespace", "My_NS"}, "lower-case letters"},
		{[]string{"version", "--mesh-namespace", "My_NS"}, "lower-case letters"},
	} {
		r := run(t, noKubeconfig(t), tc.args...)
		if r.code != command.ExitUsage || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "--mesh-namespace") {
			t.Errorf("%v: exit %d, %q; want exit 2 saying %q", tc.args, r.code, r.stderr, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("%v: wrote %d bytes to stdout", tc.args, len(r.stdout))
		}
	}
}

// A flag is offered only by the commands that use it; -n is the workloads'
// namespace and only where workloads are looked at.
func TestFlagsAreOfferedWhereUsed(t *testing.T) {
	f := command.NewFactory(command.Streams{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
	root := NewRootCmd(f, func(string) string { return "" })
	want := map[string]struct{ cluster, meshNS, workloadNS bool }{
		"check":      {true, true, true},
		"install":    {true, true, false},
		"upgrade":    {true, true, false},
		"uninstall":  {true, true, false},
		"version":    {true, true, false},
		"inject":     {true, true, false},
		"uninject":   {false, false, false},
		"completion": {false, false, false},
	}
	for _, c := range root.Commands() {
		w, ok := want[c.Name()]
		if !ok {
			if c.IsAvailableCommand() {
				t.Errorf("command %s: not in this test's table", c.Name())
			}
			continue
		}
		has := func(name string) bool { return c.Flags().Lookup(name) != nil || c.InheritedFlags().Lookup(name) != nil }
		if has("kubeconfig") != w.cluster || has("context") != w.cluster || has("verbose") != w.cluster {
			t.Errorf("%s: cluster flags offered: %v, want %v", c.Name(), has("kubeconfig"), w.cluster)
		}
		if has("mesh-namespace") != w.meshNS {
			t.Errorf("%s: --mesh-namespace offered: %v, want %v", c.Name(), has("mesh-namespace"), w.meshNS)
		}
		if has("namespace") != w.workloadNS {
			t.Errorf("%s: -n/--namespace offered: %v, want %v", c.Name(), has("namespace"), w.workloadNS)
		}
	}
	r := run(t, nil, "version", "--client", "-n", "mymesh")
	if r.code != command.ExitUsage || !strings.Contains(r.stderr, "unknown shorthand flag: 'n'") {
		t.Errorf("version -n: exit %d, %q; want a usage error", r.code, r.stderr)
	}
}

// Without any kubeconfig, every command that needs a cluster says so and
// where it looked, instead of "connection refused" from localhost:8080.
func TestNoKubeconfigIsNamed(t *testing.T) {
	for _, args := range [][]string{
		{"check"}, {"check", "--pre"}, {"uninstall"}, {"upgrade"}, {"install", "--wait", "0"}, {"version"},
	} {
		env := noKubeconfig(t)
		r := run(t, env, args...)
		all := r.stdout + r.stderr
		if !strings.Contains(all, "no kubeconfig found") || !strings.Contains(all, env["KUBECONFIG"]) || !strings.Contains(all, "in-cluster") {
			t.Errorf("%v: output does not say that no kubeconfig was found and where it looked:\n%s", args, all)
		}
		if strings.Contains(all, "localhost:8080") || strings.Contains(all, "√ can initialize the client") {
			t.Errorf("%v: output reads as if a client was made:\n%s", args, all)
		}
		if args[0] != "version" && r.code != command.ExitFailure {
			t.Errorf("%v: exit %d, want 1", args, r.code)
		}
	}
}

// Values the MeshConfig validation refuses are invalid input like schema
// errors: exit 2, nothing printed on stdout.
func TestInvalidInputExitsTwo(t *testing.T) {
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte("identity:\n  certificateLifetime: 10s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--dry-run", "--set", "identity.certificateLifetime=10s"}, "certificateLifetime"},
		{[]string{"install", "--dry-run", "-f", values}, "certificateLifetime"},
		{[]string{"install", "--dry-run", "--set", "=3"}, `--set "=3": a key is empty`},
		{[]string{"install", "--dry-run", "--set", "controller..replicas=3"}, `--set "controller..replicas=3"`},
		{[]string{"install", "--dry-run", "--set-string", "=x"}, `--set-string "=x": a key is empty`},
		{[]string{"install", "--dry-run", "--set-file", "=" + values}, "a key is empty"},
		{[]string{"install", "--dry-run", "-o", "xml"}, "invalid --output"},
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh"`},
		{[]string{"check", "-n", "Apps"}, "invalid --namespace"},
		{[]string{"uninstall", "--context", "no-such-context", "--kubeconfig", "KUBECONFIG"}, `--context "no-such-context": the kubeconfig has no such entry; it has: nowhere, staging`},
		{[]string{"completion"}, "name a shell"},
		{[]string{"instal"}, "unknown command"},
	} {
		for i, a := range tc.args {
			if a == "KUBECONFIG" {
				tc.args[i] = unreachableKubeconfig(t)
			}
		}
		r := run(t, noKubeconfig(t), tc.args...)
		if r.code != command.ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit 2 saying %q", tc.args, r.code, r.stderr, tc.want)
		}
		if r.stdout != "" {
			t.Errorf("%v: wrote %d bytes to stdout", tc.args, len(r.stdout))
		}
	}
}

// A config-file key that sets nothing (a misspelt command or flag) is named
// with its file, and is a usage error.
func TestUnknownConfigKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		config, want string
	}{
		{"instal:\n  wait: 1m\n", `unknown key "instal.wait": "instal" is not a meshctl command`},
		{"install:\n  wiat: 1m\n", "`meshctl install` has no flag --wiat"},
		{"mesh-namespce: x\n", `unknown key "mesh-namespce"`},
		{"install: 3\n", `key "install" must hold the flags`},
	} {
		cfg := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfg, []byte(tc.config), 0o600); err != nil {
			t.Fatal(err)
		}
		r := run(t, nil, "install", "--dry-run", "--config", cfg)
		if r.code != command.ExitUsage || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, cfg) {
			t.Errorf("%q: exit %d, %q; want exit 2 naming %s and saying %q", tc.config, r.code, r.stderr, cfg, tc.want)
		}
	}
	// Keys of other commands, at the top level or under their command, are
	// fine: one file serves every command.
	if err := os.WriteFile(filepath.Join(dir, "ok.yaml"), []byte("context: staging\nreport-format: json\ncheck:\n  wait: 1m\ncompletion:\n  bash:\n    no-descriptions: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, nil, "install", "--dry-run", "--config", filepath.Join(dir, "ok.yaml")); r.code != 0 {
		t.Errorf("a valid config file was refused: exit %d, %s", r.code, r.stderr)
	}
}

// Errors of a command asked for JSON are one JSON document on stderr;
// stdout stays empty.
func TestErrorsAsJSON(t *testing.T) {
	for _, args := range [][]string{
		{"version", "-o", "json", "--mesh-namespace", "My_NS"},
		{"install", "--dry-run", "-o", "json", "--set", "nope=1"},
		{"check", "-o", "json", "--wait", "-1s"},
		{"uninject", "--report-format", "json", "no-such-file.yaml"},
	} {
		r := run(t, noKubeconfig(t), args...)
		var doc JSONError
		if err := json.Unmarshal([]byte(r.stderr), &doc); err != nil {
			t.Errorf("%v: stderr is not one JSON document: %v\n%s", args, err, r.stderr)
			continue
		}
		if doc.Error == "" || doc.ExitCode != r.code || r.code == 0 {
			t.Errorf("%v: %+v, exit %d", args, doc, r.code)
		}
		if r.stdout != "" {
			t.Errorf("%v: wrote to stdout: %q", args, r.stdout)
		}
	}
	// The human form stays as it was.
	if r := run(t, nil, "version", "--mesh-namespace", "My_NS"); !strings.HasPrefix(r.stderr, "Error: ") {
		t.Errorf("plain error: %q", r.stderr)
	}
}

// complete runs cobra's hidden completion command, as the shell scripts do,
// and returns the suggestions.
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	r := run(t, nil, append([]string{cobra.ShellCompRequestCmd}, args...)...)
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if line == "" || strings.HasPrefix(line, ":") {
			continue
		}
		out = append(out, strings.SplitN(line, "\t", 2)[0])
	}
	return out
}

func TestFlagValuesComplete(t *testing.T) {
	kubeconfig := unreachableKubeconfig(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "-o", ""}, "json short table"},
		{[]string{"version", "-o", ""}, "json yaml"},
		{[]string{"install", "-o", ""}, "json yaml"},
		{[]string{"inject", "--report-format", ""}, "json text"},
		{[]string{"uninject", "--report-format", ""}, "json text"},
		{[]string{"check", "--kubeconfig", kubeconfig, "--context", ""}, "nowhere staging"},
		// An unreachable cluster completes nothing, quickly, without error.
		{[]string{"check", "--kubeconfig", kubeconfig, "-n", ""}, ""},
		{[]string{"install", "--kubeconfig", kubeconfig, "--mesh-namespace", ""}, ""},
		{[]string{"completion", ""}, "bash fish powershell zsh"},
	} {
		got := complete(t, tc.args...)
		sortStrings(got)
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%v: completes %q, want %q", tc.args, got, tc.want)
		}
	}
}

func sortStrings(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

// Without a reachable cluster, uninstall --dry-run fails the same way on
// every run (it used to name a different kind each time), and client-go's
// log lines show only with --verbose, as meshctl's debug lines.
func TestClusterErrorsAreStable(t *testing.T) {
	kubeconfig := unreachableKubeconfig(t)
	first := run(t, nil, "uninstall", "--dry-run", "--kubeconfig", kubeconfig)
	if first.code != command.ExitFailure {
		t.Fatalf("exit %d, want 1: %s", first.code, first.stderr)
	}
	for i := 0; i < 4; i++ {
		if again := run(t, nil, "uninstall", "--dry-run", "--kubeconfig", kubeconfig); again.stderr != first.stderr {
			t.Fatalf("the error differs between runs:\n%s\n%s", first.stderr, again.stderr)
		}
	}
	if strings.Contains(first.stderr, "debug:") {
		t.Errorf("client-go's lines shown without --verbose:\n%s", first.stderr)
	}
	verbose := run(t, nil, "uninstall", "--dry-run", "--verbose", "--kubeconfig", kubeconfig)
	if !strings.Contains(verbose.stderr, "debug: ") {
		t.Errorf("--verbose shows no client-go line:\n%s", verbose.stderr)
	}
}

// A source build renders the image tag "dev", which no registry publishes:
// install says so, and how to load the image, without failing.
func TestDevelopmentImageWarns(t *testing.T) {
	r := run(t, nil, "install", "--dry-run")
	if r.code != 0 || !strings.Contains(r.stderr, "ghcr.io/meshctl/meshproxy:dev, a development build's tag") || !strings.Contains(r.stderr, "kind load docker-image") {
		t.Errorf("exit %d, stderr %q; want a warning about the dev image", r.code, r.stderr)
	}
	if r := run(t, nil, "install", "--dry-run", "--set", "image.tag=v0.1.0"); r.code != 0 || strings.Contains(r.stderr, "development") {
		t.Errorf("a release tag warned: exit %d, %q", r.code, r.stderr)
	}
}
