package testenv

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A port picked free can be taken before the component binds it. Provoking
// that by chance is hopeless, so the picker is replaced to hand etcd a port
// that a listener here really holds; the start must go on with new ports.
func TestStartRetriesWhenAPortIsTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		ports, err := freePorts(n)
		if calls == 1 && err == nil {
			ports[0] = taken
		}
		return ports, err
	}
	defer func() { pickPorts = freePorts }()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, err := Start(ctx, Options{NoControllerManager: true, KeepDir: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(env.Dir)
	defer env.Stop()
	if calls != 3 { // etcd twice, then kube-apiserver
		t.Errorf("picked ports %d times, want 3 (etcd's first ports taken)", calls)
	}
	if strings.Contains(env.procs[0].cmd.String(), ":"+strconv.Itoa(taken)) {
		t.Errorf("etcd runs on the taken port %d: %s", taken, env.procs[0].cmd)
	}
	if _, err := env.Clientset().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("API server on the retried etcd: %v", err)
	}
}
