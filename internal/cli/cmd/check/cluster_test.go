package check

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m, testenv.Options{NoControllerManager: true})) }

// execute runs `meshctl check args...` against the env and returns the exit
// code and the output.
func execute(t *testing.T, env *testenv.Env, now func() time.Time, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	f := command.NewFactory(command.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &out})
	f.KubeFlags.KubeConfig = &env.KubeconfigPath
	f.MeshNamespace = "mesh-cmd-test"
	cmd := NewCmd(f, func(ctx context.Context, o *Options) error { o.Now = now; return Run(ctx, o) })
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetArgs(args)
	return command.CodeOf(cmd.Execute()), out.String()
}

// A warning does not fail the run, in any format.
func TestWarningsExitZero(t *testing.T) {
	env := testenv.Shared(t)
	ahead := func() time.Time { return time.Now().Add(time.Minute) }
	for _, format := range []string{"table", "short", "json"} {
		code, out := execute(t, env, ahead, "--pre", "-o", format)
		if code != command.ExitOK {
			t.Errorf("-o %s: exit code %d, want 0:\n%s", format, code, out)
		}
		if !strings.Contains(out, "ahead of the API server's") {
			t.Errorf("-o %s: no clock-skew warning:\n%s", format, out)
		}
		if format == "json" && !json.Valid([]byte(out)) {
			t.Errorf("-o json is not one JSON document:\n%s", out)
		}
	}
}

// Checking a mesh that is not installed fails, in any format.
func TestMissingMeshExitsOne(t *testing.T) {
	env := testenv.Shared(t)
	for _, format := range []string{"table", "short", "json"} {
		code, out := execute(t, env, nil, "-o", format)
		if code != command.ExitFailure {
			t.Errorf("-o %s: exit code %d, want 1:\n%s", format, code, out)
		}
		if !strings.Contains(out, "namespace mesh-cmd-test does not exist") {
			t.Errorf("-o %s: the report does not say the namespace is missing:\n%s", format, out)
		}
	}
}
