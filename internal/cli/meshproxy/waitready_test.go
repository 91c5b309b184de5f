package meshproxy

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshctl/mesh/internal/cli/incluster"
)

func TestWaitReadyReturnsOnceReady(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) < 3 {
			http.Error(w, "not configured", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	var out, errOut bytes.Buffer
	cmd := NewRootCmd(incluster.Streams{Out: &out, ErrOut: &errOut})
	cmd.SetArgs([]string{"wait-ready", "--admin-port", strconv.Itoa(port), "--timeout", "10s"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("wait-ready: %v", err)
	}
	if calls.Load() != 3 {
		t.Errorf("polled %d times, want 3 (two 503s, then 200)", calls.Load())
	}
}

func TestWaitReadyTimesOutSayingWhy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	err := waitReady(ctx, srv.Client(), srv.URL+"/ready", 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("want a timeout naming the last answer, got %v", err)
	}
}
