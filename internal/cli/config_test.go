package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/cli/command"
)

// The precedence of a setting: flag, then MESHCTL_* variable, then the config
// file's per-command key, then its top-level key.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("mesh-namespace: from-global\ninstall:\n  mesh-namespace: from-install\n  set: [controller.replicas=3]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	global := filepath.Join(dir, "global.yaml")
	if err := os.WriteFile(global, []byte("mesh-namespace: from-global\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"per-command key beats global key", nil, nil, "namespace: from-install"},
		{"global key when the command has none", nil, []string{"--config", global}, "namespace: from-global"},
		{"environment beats config", map[string]string{"MESHCTL_MESH_NAMESPACE": "from-env"}, nil, "namespace: from-env"},
		{"flag beats environment", map[string]string{"MESHCTL_MESH_NAMESPACE": "from-env"}, []string{"--mesh-namespace", "from-flag"}, "namespace: from-flag"},
		{"config lists set repeatable flags", nil, nil, "replicas: 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			getenv := func(k string) string { return tc.env[k] }
			args := append([]string{"install", "--dry-run", "--config", cfg}, tc.args...)
			var out, errOut bytes.Buffer
			code := Main(context.Background(), args, command.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, getenv)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("output lacks %q", tc.want)
			}
		})
	}
}

func TestConfigErrorsNameTheSource(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("install:\n  wait: soon\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"install", "--dry-run", "--config", cfg}, command.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, func(string) string { return "" })
	if code != command.ExitUsage || !strings.Contains(errOut.String(), "config key install.wait") {
		t.Fatalf("exit %d, %q: want a usage error naming config key install.wait", code, errOut.String())
	}
	if out.Len() != 0 {
		t.Errorf("wrote to stdout on failure")
	}
}
