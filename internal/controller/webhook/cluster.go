package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshctl/mesh/internal/inject"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Cluster is what injection needs from the cluster besides the MeshConfig.
// Implementations must be safe for concurrent use.
type Cluster interface {
	// TrustAnchors returns the mesh's trust anchors, one PEM certificate
	// each, which the proxy verifies the controller against.
	TrustAnchors(context.Context) ([]string, error)
	// KubernetesVersion returns the API server's version ("v1.33.1"), which
	// decides whether Job pods get a native sidecar.
	KubernetesVersion(context.Context) (string, error)
}

// Static is a Cluster whose answers are fixed, for tests and for callers
// that read the cluster themselves.
type Static struct {
	Anchors []string
	Version string
}

func (s Static) TrustAnchors(context.Context) ([]string, error)    { return s.Anchors, nil }
func (s Static) KubernetesVersion(context.Context) (string, error) { return s.Version, nil }

var _ Cluster = Static{}
var _ Cluster = (*clusterReader)(nil)

// Cached answers are reread after these intervals: anchors change when they
// are rotated, which takes far longer than a minute to roll out; the
// server's version only with an upgrade.
const (
	anchorsTTL = time.Minute
	versionTTL = 10 * time.Minute
)

// NewCluster reads the trust anchors from the ConfigMap
// wellknown.TrustAnchorsName in meshNamespace, and the server's version
// from discovery. Answers are cached; a failed reread keeps the last good
// answer, so that an API server hiccup does not leave pods without a proxy.
// now may be nil (time.Now).
func NewCluster(kube kubernetes.Interface, meshNamespace string, now func() time.Time) Cluster {
	if now == nil {
		now = time.Now
	}
	return &clusterReader{kube: kube, ns: meshNamespace, now: now}
}

type clusterReader struct {
	kube kubernetes.Interface
	ns   string
	now  func() time.Time

	mu        sync.Mutex
	anchors   []string
	anchorsAt time.Time
	version   string
	versionAt time.Time
}

func (c *clusterReader) TrustAnchors(ctx context.Context) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.anchors != nil && c.now().Sub(c.anchorsAt) < anchorsTTL {
		return c.anchors, nil
	}
	a, err := c.readAnchors(ctx)
	if err != nil {
		if c.anchors != nil {
			return c.anchors, nil
		}
		return nil, err
	}
	c.anchors, c.anchorsAt = a, c.now()
	return a, nil
}

func (c *clusterReader) readAnchors(ctx context.Context) ([]string, error) {
	cm, err := c.kube.CoreV1().ConfigMaps(c.ns).Get(ctx, wellknown.TrustAnchorsName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("reading the trust anchors: ConfigMap %s/%s not found", c.ns, wellknown.TrustAnchorsName)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the trust anchors: %w", err)
	}
	return inject.ParseTrustAnchors([]byte(cm.Data[inject.TrustAnchorsKey]))
}

func (c *clusterReader) KubernetesVersion(context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != "" && c.now().Sub(c.versionAt) < versionTTL {
		return c.version, nil
	}
	info, err := c.kube.Discovery().ServerVersion()
	if err != nil {
		if c.version != "" {
			return c.version, nil
		}
		return "", fmt.Errorf("reading the API server's version: %w", err)
	}
	c.version, c.versionAt = info.GitVersion, c.now()
	return c.version, nil
}
