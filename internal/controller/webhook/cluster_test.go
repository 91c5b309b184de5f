package webhook

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/testenv"
	"github.com/meshctl/mesh/internal/wellknown"
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, testenv.Options{NoControllerManager: true}))
}

// clock is a time source the test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestClusterReadsTheTrustAnchors reads the ConfigMap and the version from
// a real API server: missing, then present, then kept (last good) when it
// disappears, and reread after the cache expires.
func TestClusterReadsTheTrustAnchors(t *testing.T) {
	env := testenv.Shared(t)
	ctx := context.Background()
	const ns = "webhook-cluster"
	kube := env.Clientset()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	c := NewCluster(kube, ns, clk.now)

	if _, err := c.TrustAnchors(ctx); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("without the ConfigMap: %v", err)
	}
	anchors := testAnchors(t)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: wellknown.TrustAnchorsName},
		Data:       map[string]string{"ca-bundle.crt": strings.Join(anchors, "")},
	}
	if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.TrustAnchors(ctx)
	if err != nil || len(got) != 1 || got[0] != anchors[0] {
		t.Fatalf("anchors %v, %v", got, err)
	}
	if err := kube.CoreV1().ConfigMaps(ns).Delete(ctx, wellknown.TrustAnchorsName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.add(2 * anchorsTTL)
	if got, err := c.TrustAnchors(ctx); err != nil || len(got) != 1 {
		t.Errorf("after the ConfigMap went: %v, %v; want the last good anchors", got, err)
	}
	v, err := c.KubernetesVersion(ctx)
	if err != nil || !strings.HasPrefix(v, "v1.") {
		t.Errorf("version %q, %v", v, err)
	}
}
