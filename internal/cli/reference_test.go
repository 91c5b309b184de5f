package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshctl/mesh/internal/golden"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/incluster"
	"github.com/meshctl/mesh/internal/cli/meshcontroller"
	"github.com/meshctl/mesh/internal/cli/meshproxy"
)

// The CLI reference in docs/ is generated from the command trees of meshctl,
// meshproxy and meshcontroller, so every flag a user can see is documented;
// this test fails when it is stale. Run
// `go test ./internal/cli -run TestCLIReference -update` after changing a
// command.
func TestCLIReference(t *testing.T) {
	dir := filepath.Join("..", "..", "docs", "reference", "cli")
	f := command.NewFactory(command.Streams{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
	root := NewRootCmd(f, func(string) string { return "" })
	root.DisableAutoGenTag = true
	walk(root, func(c *cobra.Command) {
		c.DisableAutoGenTag = true
		// kubectl's cache directory defaults to the user's home; the
		// reference shows it the way kubectl's help does on any machine.
		if fl := c.Flags().Lookup("cache-dir"); fl != nil {
			fl.DefValue = "$HOME/.kube/cache"
		}
	})

	got := t.TempDir()
	if err := doc.GenMarkdownTree(root, got); err != nil {
		t.Fatal(err)
	}
	// The in-cluster binaries have references of their own beside meshctl's:
	// their flags are what the chart and the injector write.
	s := incluster.Streams{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}
	for _, bin := range []*cobra.Command{meshproxy.NewRootCmd(s), meshcontroller.NewRootCmd(s)} {
		bin.InitDefaultCompletionCmd()
		walk(bin, func(c *cobra.Command) { c.DisableAutoGenTag = true })
		if err := doc.GenMarkdownTree(bin, got); err != nil {
			t.Fatal(err)
		}
	}
	if golden.Update() {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(dir, os.DirFS(got)); err != nil {
			t.Fatal(err)
		}
		return
	}
	entries, err := os.ReadDir(got)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want, err := os.ReadFile(filepath.Join(got, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		have, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || !bytes.Equal(have, want) {
			t.Errorf("docs/reference/cli/%s is stale: run go test ./internal/cli -run TestCLIReference -update", e.Name())
		}
	}
	documented, _ := os.ReadDir(dir)
	if len(documented) != len(entries) {
		t.Errorf("docs/reference/cli has %d files, the command tree %d: run with -update", len(documented), len(entries))
	}
}

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}
