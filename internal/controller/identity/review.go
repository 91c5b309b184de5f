package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"

	"github.com/meshctl/mesh/internal/wellknown"
)

// TokenReviewer asks the API server who a bearer token belongs to.
type TokenReviewer interface {
	// Review returns the API server's verdict on token for the mesh's
	// identity audience; an error means there is no verdict (the API
	// server unreachable, the review forbidden), not that the token is
	// bad.
	Review(ctx context.Context, token string) (*authenticationv1.TokenReviewStatus, error)
}

// KubeTokenReviewer reviews tokens with the TokenReview API, for the
// audience wellknown.IdentityTokenAudience. Its client needs `create` on
// authentication.k8s.io/tokenreviews (cluster-scoped).
type KubeTokenReviewer struct {
	Client authenticationv1client.TokenReviewsGetter
}

var _ TokenReviewer = (*KubeTokenReviewer)(nil)

// NewTokenReviewer builds a KubeTokenReviewer from a client configuration.
// Client-side rate limiting is turned off for it: every certificate request
// makes one review, client-go's default of 5 per second would cap issuance
// far below what the controller can sign, and the API server protects
// itself with priority and fairness.
func NewTokenReviewer(kube *rest.Config) (*KubeTokenReviewer, error) {
	cfg := rest.CopyConfig(kube)
	cfg.QPS, cfg.Burst, cfg.RateLimiter = -1, 0, nil
	c, err := authenticationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the TokenReview client: %w", err)
	}
	return &KubeTokenReviewer{Client: c}, nil
}

// Review implements TokenReviewer.
func (r *KubeTokenReviewer) Review(ctx context.Context, token string) (*authenticationv1.TokenReviewStatus, error) {
	tr, err := r.Client.TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{wellknown.IdentityTokenAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("reviewing the token: %w", err)
	}
	return &tr.Status, nil
}

// serviceAccountOf reads "system:serviceaccount:<namespace>:<name>".
func serviceAccountOf(username string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(username, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return namespace, name, true
}

// claimedAudiences returns the "aud" claim of a JWT without verifying it.
// It serves only to tell a proxy that its token, which the API server has
// already refused, was made for another audience: the API server's
// verdict does not say why.
func claimedAudiences(token string) []string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var claims struct {
		Aud json.RawMessage `json:"aud"`
	}
	if json.Unmarshal(payload, &claims) != nil || len(claims.Aud) == 0 {
		return nil
	}
	var one string
	if json.Unmarshal(claims.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	json.Unmarshal(claims.Aud, &many)
	return many
}

func hasAudience(auds []string) bool {
	return slices.Contains(auds, wellknown.IdentityTokenAudience)
}
