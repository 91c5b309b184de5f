package wellknown

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Every label and annotation key must be a valid Kubernetes qualified name
// under the mesh's one domain prefix, or one of the recommended
// app.kubernetes.io labels.
func TestKeysAreQualifiedNamesUnderTheDomain(t *testing.T) {
	keys := []string{
		LabelControlPlaneNamespace, LabelComponent, LabelVersion, LabelInject,
		AnnotationInject, AnnotationInjected, AnnotationProxyConfig, AnnotationProxyImage, AnnotationProxyVersion,
		AnnotationProxyCPURequest, AnnotationProxyCPULimit, AnnotationProxyMemoryRequest,
		AnnotationProxyMemoryLimit, AnnotationProxyLogLevel, AnnotationSkipInboundPorts,
		AnnotationSkipOutboundPorts, AnnotationSkipOutboundCIDRs, AnnotationOpaquePorts,
		AnnotationMTLSMode, AnnotationStrictMTLSPorts, AnnotationPermissiveMTLSPorts,
	}
	for _, k := range keys {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			t.Errorf("%q is not a qualified name: %v", k, errs)
		}
		if !strings.HasPrefix(k, Domain+"/") {
			t.Errorf("%q is not under %s/", k, Domain)
		}
	}
}
