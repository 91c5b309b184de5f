package meshapi

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// The validations below are what a proxy checks before it applies a
// resource (a failure is a NACK) and what the controller checks before it
// sends one, so that one rule decides on both sides.

// Validate checks the mesh settings.
func (m *MeshSettings) Validate() error {
	if m.TrustDomain == "" {
		return errors.New("trustDomain: required")
	}
	switch m.InboundMTLS {
	case MTLSPermissive, MTLSStrict:
	default:
		return fmt.Errorf("inboundMTLS: %q is not one of %q, %q", m.InboundMTLS, MTLSPermissive, MTLSStrict)
	}
	return nil
}

// Validate checks that every anchor is one PEM certificate of a CA.
func (b *Bundle) Validate() error {
	if b.TrustDomain == "" {
		return errors.New("trustDomain: required")
	}
	if len(b.Anchors) == 0 {
		return errors.New("anchors: at least one is required")
	}
	for i, a := range b.Anchors {
		if _, err := ParseAnchor(a); err != nil {
			return fmt.Errorf("anchors[%d]: %w", i, err)
		}
	}
	return nil
}

// ParseAnchor reads one PEM certificate that must be a CA.
func ParseAnchor(s string) (*x509.Certificate, error) {
	blk, rest := pem.Decode([]byte(s))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM CERTIFICATE")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("more than one PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	if !c.IsCA {
		return nil, errors.New("not a CA certificate")
	}
	return c, nil
}

// Validate checks a service's name, addresses and ports.
func (s *Service) Validate() error {
	if s.Namespace == "" || s.Name == "" {
		return errors.New("namespace and name: required")
	}
	for i, a := range s.Addresses {
		if _, err := netip.ParseAddr(a); err != nil {
			return fmt.Errorf("addresses[%d]: %q is not an IP address", i, a)
		}
	}
	seen := map[uint16]bool{}
	names := map[string]bool{}
	for i, p := range s.Ports {
		if p.Port == 0 {
			return fmt.Errorf("ports[%d].port: required", i)
		}
		if seen[p.Port] {
			return fmt.Errorf("ports[%d].port: %d appears twice", i, p.Port)
		}
		seen[p.Port] = true
		if p.TargetPort == 0 && p.Name == "" {
			return fmt.Errorf("ports[%d]: a port without targetPort needs a name", i)
		}
		if p.Name != "" {
			if names[p.Name] {
				return fmt.Errorf("ports[%d].name: %q appears twice", i, p.Name)
			}
			names[p.Name] = true
		}
		switch p.Protocol {
		case ProtocolDetect, ProtocolHTTP1, ProtocolHTTP2, ProtocolGRPC, ProtocolOpaque:
		default:
			return fmt.Errorf("ports[%d].protocol: %q is not one of http1, http2, grpc, opaque or empty", i, p.Protocol)
		}
	}
	return nil
}

// Validate checks every endpoint and that no address appears twice.
func (e *Endpoints) Validate() error {
	seen := make(map[string]bool, len(e.Endpoints))
	for i := range e.Endpoints {
		ep := &e.Endpoints[i]
		if err := ep.Validate(); err != nil {
			return fmt.Errorf("endpoints[%d]: %w", i, err)
		}
		if seen[ep.Address] {
			return fmt.Errorf("endpoints[%d].address: %s appears twice", i, ep.Address)
		}
		seen[ep.Address] = true
	}
	return nil
}

// Validate checks one endpoint.
func (e *Endpoint) Validate() error {
	a, err := netip.ParseAddr(e.Address)
	if err != nil {
		return fmt.Errorf("address: %q is not an IP address", e.Address)
	}
	if a.Zone() != "" {
		return fmt.Errorf("address: %q has a zone", e.Address)
	}
	if e.Meshed && e.Identity == "" {
		return errors.New("identity: required for a meshed endpoint")
	}
	if e.Identity != "" && !strings.HasPrefix(e.Identity, "spiffe://") {
		return fmt.Errorf("identity: %q is not a SPIFFE id", e.Identity)
	}
	for name, p := range e.Ports {
		if p == 0 {
			return fmt.Errorf("ports[%q]: zero", name)
		}
	}
	return nil
}

// Validate checks that exactly the resource of the message's kind is set.
func (m *ServerMessage) Validate() error {
	set := 0
	for _, b := range []bool{m.Mesh != nil, m.Bundle != nil, m.Service != nil, m.Endpoints != nil, m.EndpointsDelta != nil, m.Resolution != nil} {
		if b {
			set++
		}
	}
	if m.Removed {
		if set != 0 {
			return fmt.Errorf("%s %q: removed, yet carries a resource", m.Kind, m.Name)
		}
		if m.Kind != KindService && m.Kind != KindEndpoints {
			return fmt.Errorf("%s %q: only services and endpoints can be removed", m.Kind, m.Name)
		}
		return nil
	}
	if set != 1 {
		return fmt.Errorf("%s %q: want exactly one resource, got %d", m.Kind, m.Name, set)
	}
	var err error
	switch {
	case m.Kind == KindMesh && m.Mesh != nil:
		err = m.Mesh.Validate()
	case m.Kind == KindBundle && m.Bundle != nil:
		err = m.Bundle.Validate()
	case m.Kind == KindService && m.Service != nil:
		err = m.Service.Validate()
		if err == nil && m.Name != m.Service.Namespace+"/"+m.Service.Name {
			err = fmt.Errorf("name %q differs from the service's %s/%s", m.Name, m.Service.Namespace, m.Service.Name)
		}
	case m.Kind == KindEndpoints && m.Endpoints != nil:
		err = m.Endpoints.Validate()
	case m.Kind == KindEndpoints && m.EndpointsDelta != nil:
		for i := range m.EndpointsDelta.Upsert {
			if err = m.EndpointsDelta.Upsert[i].Validate(); err != nil {
				err = fmt.Errorf("upsert[%d]: %w", i, err)
				break
			}
		}
	case m.Kind == KindResolution && m.Resolution != nil:
		if _, e := netip.ParseAddrPort(m.Resolution.Address); e != nil {
			err = fmt.Errorf("address: %q is not an address and port", m.Resolution.Address)
		}
	default:
		return fmt.Errorf("%s %q: the resource set does not match the kind", m.Kind, m.Name)
	}
	if err != nil {
		return fmt.Errorf("%s %q version %d: %w", m.Kind, m.Name, m.Version, err)
	}
	return nil
}
