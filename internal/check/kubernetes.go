package check

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilversion "k8s.io/apimachinery/pkg/util/version"
)

// MinKubernetesVersion is the oldest Kubernetes the mesh supports: the first
// with native sidecars on by default (1.29), which the injector can use.
const MinKubernetesVersion = "1.29.0"

// MaxClockSkew is how far this machine's clock may be from the API server's
// before check --pre warns: certificates that meshctl makes start at this
// machine's "now" minus a few minutes, and the API server's Date header has a
// resolution of one second.
const MaxClockSkew = 5 * time.Second

// Category IDs, as printed.
const (
	CategoryKubernetesAPI     = "kubernetes-api"
	CategoryKubernetesVersion = "kubernetes-version"
	CategoryPreInstall        = "pre-install"
	CategoryExistence         = "control-plane-existence"
	CategoryPods              = "control-plane-pods"
	CategoryIdentity          = "identity"
	CategoryWebhook           = "webhook"
)

// PreInstall are the checks of `meshctl check --pre`: can this cluster and
// this user take the mesh.
func PreInstall() []Category {
	return []Category{kubernetesAPI(), kubernetesVersion(), preInstall()}
}

// PostInstall are the checks of `meshctl check`: is the installed control
// plane whole, healthy and of this version.
func PostInstall() []Category {
	return []Category{kubernetesAPI(), kubernetesVersion(), existence(), pods(), identity(), webhook(), dataPlane()}
}

func kubernetesAPI() Category {
	return Category{ID: CategoryKubernetesAPI, Checks: []Check{
		{
			Description: "can initialize the client",
			Hint:        "k8s-api-client",
			Severity:    Fatal,
			Run:         func(_ context.Context, s *State) error { return s.connect() },
		},
		{
			Description: "can query the Kubernetes API",
			Hint:        "k8s-api-query",
			Severity:    Fatal,
			Run: func(ctx context.Context, s *State) error {
				if err := s.clients(); err != nil {
					return err
				}
				// ServerVersion takes no context; the discovery client's
				// REST client does.
				var info struct {
					GitVersion string `json:"gitVersion"`
				}
				raw, err := s.kube.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
				if err != nil {
					return fmt.Errorf("querying the API server: %w", err)
				}
				if err := json.Unmarshal(raw, &info); err != nil {
					return fmt.Errorf("decoding the server version: %w", err)
				}
				s.serverVersion = info.GitVersion
				return nil
			},
		},
	}}
}

func kubernetesVersion() Category {
	return Category{ID: CategoryKubernetesVersion, Checks: []Check{{
		Description: "is running the minimum Kubernetes version",
		Hint:        "k8s-version",
		Run: func(_ context.Context, s *State) error {
			got, err := utilversion.ParseGeneric(s.serverVersion)
			if err != nil {
				return fmt.Errorf("parsing the server version %q: %w", s.serverVersion, err)
			}
			if got.LessThan(utilversion.MustParseGeneric(MinKubernetesVersion)) {
				return fmt.Errorf("Kubernetes %s is older than the minimum supported %s", s.serverVersion, MinKubernetesVersion)
			}
			return nil
		},
	}}}
}

func preInstall() Category {
	return Category{ID: CategoryPreInstall, Checks: []Check{
		{
			Description: "can create the control plane's objects",
			Hint:        "pre-permissions",
			Run:         checkCreatePermissions,
		},
		{
			Description: "the mesh namespace does not exist yet",
			Hint:        "pre-namespace",
			Run: func(ctx context.Context, s *State) error {
				ns, err := s.kube.CoreV1().Namespaces().Get(ctx, s.cfg.Namespace, metav1.GetOptions{})
				switch {
				case isNotFound(err):
					return nil
				case err != nil:
					return fmt.Errorf("getting namespace %s: %w", s.cfg.Namespace, err)
				case ns.DeletionTimestamp != nil:
					return fmt.Errorf("namespace %s is still being deleted", s.cfg.Namespace)
				}
				return fmt.Errorf("namespace %s already exists", s.cfg.Namespace)
			},
		},
		{
			Description: "this machine's clock agrees with the API server's",
			Hint:        "pre-clock-skew",
			Severity:    Warning,
			Run:         checkClockSkew,
		},
	}}
}

// checkCreatePermissions asks the API server, with one
// SelfSubjectAccessReview per kind, whether the user may create each kind
// the chart renders, and names those it may not.
func checkCreatePermissions(ctx context.Context, s *State) error {
	var denied []string
	for _, r := range chartResources {
		attrs := &authorizationv1.ResourceAttributes{
			Verb:     "create",
			Group:    r.GVR.Group,
			Version:  r.GVR.Version,
			Resource: r.GVR.Resource,
		}
		if r.Namespaced {
			attrs.Namespace = s.cfg.Namespace
		}
		review, err := s.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs}},
			metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("asking whether %ss may be created: %w", r.Kind, err)
		}
		if !review.Status.Allowed {
			denied = append(denied, r.Kind)
		}
	}
	if len(denied) > 0 {
		sort.Strings(denied)
		return fmt.Errorf("not allowed to create: %s", strings.Join(denied, ", "))
	}
	return nil
}

// checkClockSkew compares the Date of the API server's latest answer with
// this machine's clock when the answer arrived.
func checkClockSkew(ctx context.Context, s *State) error {
	if _, err := s.kube.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Raw(); err != nil {
		return fmt.Errorf("querying the API server: %w", err)
	}
	server, local, ok := s.dates.last()
	if !ok {
		return fmt.Errorf("the API server's answer carried no Date header")
	}
	// The Date header is truncated to the second.
	skew := local.Sub(server.Add(500 * time.Millisecond))
	if skew.Abs() <= MaxClockSkew {
		return nil
	}
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	return fmt.Errorf("this machine's clock is %s %s the API server's (more than %s)", skew.Abs().Round(time.Second), dir, MaxClockSkew)
}
