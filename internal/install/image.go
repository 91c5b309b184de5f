package install

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/meshctl/mesh/internal/install/render"
)

// pseudoVersion matches the timestamp and commit of a Go pseudo-version
// ("v0.0.0-20261201051000-0123456789ab"), which `go install` stamps on a
// build from an untagged commit.
var pseudoVersion = regexp.MustCompile(`\d{14}-[0-9a-f]{12}`)

// IsDevelopmentTag reports whether an image tag comes from a development
// build (a source build's "dev", a pseudo-version, a dirty tree): no
// registry publishes such an image, so nodes cannot pull it unless it was
// built and loaded into the cluster by hand.
func IsDevelopmentTag(tag string) bool {
	return tag == "dev" || strings.HasSuffix(tag, "-dev") || strings.Contains(tag, "dirty") || pseudoVersion.MatchString(tag)
}

// DevelopmentImageWarning returns a warning when the rendered control plane
// runs an image with a development tag, and "" otherwise.
func DevelopmentImageWarning(m *render.Manifest) string {
	mc, err := m.MeshConfig()
	if err != nil || mc == nil {
		return ""
	}
	image := mc.Spec.Proxy.Image
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") || !IsDevelopmentTag(image[i+1:]) {
		return ""
	}
	return fmt.Sprintf("the control plane and proxies will run image %s, a development build's tag that no registry publishes: "+
		"build the image and load it into the cluster first (kind load docker-image / minikube image load; see the README), "+
		"or install a release with --set image.tag=<version>", image)
}
