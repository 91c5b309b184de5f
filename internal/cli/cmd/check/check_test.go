package check

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/check"
	"github.com/meshctl/mesh/internal/cli/command"
)

// unreachableFactory points the factory at an API server that refuses
// connections: the kubernetes-api checks fail, and so does the run.
func unreachableFactory(t *testing.T) (*command.Factory, *bytes.Buffer) {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster:
    server: https://127.0.0.1:1
contexts:
- name: nowhere
  context:
    cluster: nowhere
    user: nobody
current-context: nowhere
users:
- name: nobody
  user:
    token: none
`
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	f := command.NewFactory(command.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &out})
	f.KubeFlags.KubeConfig = &kubeconfig
	return f, &out
}

func TestFlags(t *testing.T) {
	f, _ := unreachableFactory(t)
	var got *Options
	cmd := NewCmd(f, func(_ context.Context, o *Options) error { got = o; return nil })
	cmd.SetArgs([]string{"--pre", "--wait", "90s", "-o", "short"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !got.Pre || got.Wait != 90*time.Second || got.Output != "short" {
		t.Errorf("options %+v", got)
	}

	cmd = NewCmd(f, func(_ context.Context, o *Options) error { got = o; return nil })
	cmd.SetArgs(nil)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Pre || got.Wait != DefaultWait || got.Output != "table" {
		t.Errorf("default options %+v", got)
	}
}

func TestInvalidFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-o", "yaml"}, {"--wait", "-1s"}, {"extra"}} {
		f, _ := unreachableFactory(t)
		cmd := NewCmd(f, func(context.Context, *Options) error { t.Error("ran with invalid flags"); return nil })
		cmd.SetArgs(args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		if code := command.CodeOf(cmd.Execute()); code != command.ExitUsage {
			t.Errorf("%v: exit code %d, want %d", args, code, command.ExitUsage)
		}
	}
}

// TestFailedRunExitsOneInEveryFormat: the exit code does not depend on the
// output format, and -o json prints one valid document even then.
func TestFailedRunExitsOneInEveryFormat(t *testing.T) {
	for _, format := range []string{"table", "short", "json"} {
		for _, pre := range []bool{false, true} {
			f, out := unreachableFactory(t)
			cmd := NewCmd(f, nil)
			cmd.SilenceUsage, cmd.SilenceErrors = true, true // as under the root command
			args := []string{"-o", format}
			if pre {
				args = append(args, "--pre")
			}
			cmd.SetArgs(args)
			err := cmd.Execute()
			if code := command.CodeOf(err); code != command.ExitFailure {
				t.Errorf("-o %s, --pre=%v: exit code %d (%v), want %d", format, pre, code, err, command.ExitFailure)
			}
			if _, silent := err.(command.Silent); !silent {
				t.Errorf("-o %s: error %v is not Silent: the CLI would print it after the report", format, err)
			}
			switch format {
			case "json":
				var doc struct {
					Success    bool `json:"success"`
					Categories []struct {
						Checks []struct {
							Result string `json:"result"`
						} `json:"checks"`
					} `json:"categories"`
				}
				if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
					t.Fatalf("-o json is not one JSON document: %v\n%s", err, out)
				}
				if doc.Success || len(doc.Categories) != 1 {
					t.Errorf("-o json: %s", out)
				}
			default:
				t.Logf("-o %s:\n%s", format, out)
				if !strings.Contains(out.String(), "× can query the Kubernetes API") || !strings.Contains(out.String(), "Status check results are ×") {
					t.Errorf("-o %s:\n%s", format, out)
				}
			}
		}
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		sum  check.Summary
		want int
	}{
		{check.Summary{Success: true}, command.ExitOK},
		{check.Summary{Success: false}, command.ExitFailure},
		{check.Summary{Success: false, TimedOut: true}, command.ExitFailure},
	} {
		if got := command.CodeOf(exitError(tc.sum)); got != tc.want {
			t.Errorf("%+v: exit code %d, want %d", tc.sum, got, tc.want)
		}
	}
}
