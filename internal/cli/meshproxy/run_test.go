package meshproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/adminapi"
	"github.com/meshctl/mesh/internal/testenv"

	"github.com/meshctl/mesh/internal/cli/incluster"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRunServesAdminAndDrainsOnCancel runs the command as main does: ready
// once started, reload through the admin API, drain and return nil when its
// context is cancelled (SIGTERM in main).
func TestRunServesAdminAndDrainsOnCancel(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "proxy.yaml")
	doc := func(v string) []byte {
		return []byte(fmt.Sprintf("version: %s\ninbound: {address: %q}\noutbound: {address: %q}\n", v, freeAddr(t), freeAddr(t)))
	}
	os.WriteFile(cfg, doc("v1"), 0o644)
	admin := freeAddr(t)
	var out, errOut testenv.Output
	cmd := NewRootCmd(incluster.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs([]string{"run", "--config", cfg, "--admin-address", admin, "--access-log", "--drain-timeout", "2s"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	base := "http://" + admin
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready: %v\n%s", err, errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	os.WriteFile(cfg, doc("v2"), 0o644)
	resp, err := http.Post(base+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st adminapi.Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 200 || st.ConfigVersion != "v2" {
		t.Fatalf("reload: %d %+v", resp.StatusCode, st)
	}
	resp, err = http.Get(base + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"version": "v2"`) {
		t.Errorf("config dump after reload:\n%s", b)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if !strings.Contains(errOut.String(), `"msg":"drained"`) {
		t.Errorf("logs lack the drain:\n%s", errOut.String())
	}
}

func TestRunRejectsInvalidConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("version: v\nlimits: {maxConnections: -1}\n"), 0o644)
	var out, errOut bytes.Buffer
	cmd := NewRootCmd(incluster.Streams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs([]string{"run", "--config", cfg})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "limits.maxConnections") || !strings.Contains(err.Error(), cfg) {
		t.Fatalf("error %v", err)
	}
}
