package install

import (
	"fmt"
	"strings"

	"github.com/meshctl/mesh/internal/install/render"
)

// SplitCredentials takes the credential keys out of the user's values, as
// `helm template --set-file identity.trustAnchorsPEM=...` would give them, so
// that they are used but never stored with the values. A group (identity or
// webhook) must be given whole or not at all.
func SplitCredentials(values map[string]any) (rest map[string]any, id *render.Identity, wh *render.Webhook, err error) {
	get := func(key string) string {
		var cur any = values
		for _, p := range strings.Split(key, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				return ""
			}
			cur = m[p]
		}
		s, _ := cur.(string)
		return s
	}
	group := func(keys ...string) ([][]byte, error) {
		var given, missing []string
		out := make([][]byte, len(keys))
		for i, k := range keys {
			if v := get(k); v != "" {
				out[i] = []byte(v)
				given = append(given, k)
			} else {
				missing = append(missing, k)
			}
		}
		switch {
		case len(given) == 0:
			return nil, nil
		case len(missing) > 0:
			return nil, fmt.Errorf("values %s given without %s: give all or none", strings.Join(given, ", "), strings.Join(missing, ", "))
		}
		return out, nil
	}
	ids, err := group(render.KeyTrustAnchorsPEM, render.KeyIssuerCertPEM, render.KeyIssuerKeyPEM)
	if err != nil {
		return nil, nil, nil, err
	}
	if ids != nil {
		loaded, err := LoadIdentityFiles(ids[0], ids[1], ids[2])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("checking the identity values: %w", err)
		}
		id = &loaded
	}
	whs, err := group(render.KeyWebhookCAPEM, render.KeyWebhookCertPEM, render.KeyWebhookKeyPEM)
	if err != nil {
		return nil, nil, nil, err
	}
	if whs != nil {
		wh = &render.Webhook{CABundlePEM: whs[0], CertPEM: whs[1], KeyPEM: whs[2]}
	}
	return render.StripCredentials(values), id, wh, nil
}
