package inject

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/pki"
	"github.com/meshctl/mesh/internal/wellknown"
)

// TrustAnchorsKey is the key of the PEM bundle in the trust-anchors
// ConfigMap (wellknown.TrustAnchorsName in the mesh's namespace), as the
// chart's templates/identity.yaml writes it.
const TrustAnchorsKey = "ca-bundle.crt"

// ParseTrustAnchors splits a PEM bundle into one PEM string per
// certificate, checking that each is one: a proxy given anchors it cannot
// parse could never verify the controller, and would fail far from the
// cause.
func ParseTrustAnchors(bundle []byte) ([]string, error) {
	if len(bytes.TrimSpace(bundle)) == 0 {
		return nil, errors.New("reading the trust anchors: the bundle is empty")
	}
	certs, err := pki.ParseCertificates(bundle)
	if err != nil {
		return nil, fmt.Errorf("reading the trust anchors: %w", err)
	}
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return out, nil
}

// controllerBootstrap is the "controller" object of the proxy's bootstrap
// configuration: where the mesh API is, whom to expect there, the anchors
// its certificate chains to, and the token to present.
func (s *Settings) controllerBootstrap() (*meshapi.Bootstrap, error) {
	switch {
	case len(s.TrustAnchors) == 0:
		return nil, errors.New("no trust anchors: the proxy could not verify the controller that issues its identity")
	case s.TrustDomain == "":
		return nil, errors.New("no trust domain: the proxy could not name the controller's identity")
	case s.MeshNamespace == "":
		return nil, errors.New("no mesh namespace: the proxy could not find the controller")
	}
	server, err := pki.NewWorkloadID(s.TrustDomain, s.MeshNamespace, wellknown.ControllerServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("naming the controller's identity: %w", err)
	}
	return &meshapi.Bootstrap{
		Address:        wellknown.ControllerName + "." + s.MeshNamespace + ".svc:" + strconv.Itoa(wellknown.ControllerMeshAPIPort),
		ServerIdentity: server.String(),
		TrustAnchors:   s.TrustAnchors,
		TokenFile:      MountPath + "/" + TokenFile,
	}, nil
}

// bootstrapObject is b in the emitter's model, in meshapi.Bootstrap's field
// order.
func bootstrapObject(b *meshapi.Bootstrap) object {
	anchors := make(list, len(b.TrustAnchors))
	for i, a := range b.TrustAnchors {
		anchors[i] = a
	}
	return object{
		{"address", b.Address},
		{"serverIdentity", b.ServerIdentity},
		{"trustAnchors", anchors},
		{"tokenFile", b.TokenFile},
	}
}
