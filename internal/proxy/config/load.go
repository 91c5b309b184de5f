package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/proxy/upstream"
)

// Load reads, validates and compiles the configuration file at path, with
// a registry of its own. YAML and JSON are both accepted; unknown keys are
// errors so that a typo does not silently fall back to a default.
func Load(path string) (*Table, error) {
	return load(path, upstream.NewRegistry())
}

func load(path string, reg *upstream.Registry) (*Table, error) {
	c, err := loadConfig(path)
	if err != nil {
		return nil, err
	}
	return Compile(c, c.Set(), path, reg), nil
}

// loadConfig reads and validates the file at path, with defaults applied.
func loadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	return parseConfig(data, path)
}

// Parse validates and compiles a configuration document, with a registry
// of its own. source names it in errors and in /config_dump.
func Parse(data []byte, source string) (*Table, error) {
	return parse(data, source, upstream.NewRegistry())
}

func parse(data []byte, source string, reg *upstream.Registry) (*Table, error) {
	c, err := parseConfig(data, source)
	if err != nil {
		return nil, err
	}
	return Compile(c, c.Set(), source, reg), nil
}

func parseConfig(data []byte, source string) (Config, error) {
	var c Config
	if err := decodeStrict(data, &c); err != nil {
		return Config{}, newError(source, data, collect(err))
	}
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return Config{}, newError(source, data, collect(err))
	}
	return c, nil
}

// validate returns every problem of the configuration, joined.
func (c *Config) validate() error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if c.Version == "" {
		add(errf("version", "required"))
	}
	for _, a := range []struct{ path, addr string }{
		{"inbound.address", c.Inbound.Address},
		{"outbound.address", c.Outbound.Address},
	} {
		if _, port, err := net.SplitHostPort(a.addr); err != nil {
			add(errf(a.path, "want host:port: %v", err))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			add(errf(a.path, "invalid port %q", port))
		}
	}
	switch c.Inbound.ForwardTo {
	case ForwardOriginal, ForwardLoopback:
	default:
		add(errf("inbound.forwardTo", "want %q or %q, got %q", ForwardOriginal, ForwardLoopback, c.Inbound.ForwardTo))
	}
	for i, p := range c.Inbound.OpaquePorts {
		if !validPort(p) {
			add(errf(fmt.Sprintf("inbound.opaquePorts[%d]", i), "want a port 1-65535, got %d", p))
		}
	}
	for i, p := range c.Outbound.OpaquePorts {
		if !validPort(p) {
			add(errf(fmt.Sprintf("outbound.opaquePorts[%d]", i), "want a port 1-65535, got %d", p))
		}
	}
	switch c.Inbound.MTLS {
	case "", meshapi.MTLSPermissive, meshapi.MTLSStrict:
	default:
		add(errf("inbound.mtls", "want %q or %q, got %q", meshapi.MTLSPermissive, meshapi.MTLSStrict, c.Inbound.MTLS))
	}
	for _, list := range []struct {
		path  string
		ports []int
	}{
		{"inbound.strictMTLSPorts", c.Inbound.StrictMTLSPorts}, {"inbound.permissiveMTLSPorts", c.Inbound.PermissiveMTLSPorts},
		{"inbound.connectProxyPorts", c.Inbound.ConnectProxyPorts}, {"outbound.connectProxyPorts", c.Outbound.ConnectProxyPorts},
	} {
		for i, p := range list.ports {
			if !validPort(p) {
				add(errf(fmt.Sprintf("%s[%d]", list.path, i), "want a port 1-65535, got %d", p))
			}
		}
	}
	if h := c.Inbound.ClientIdentityHeader; h != "" && h != "-" && !validHeaderName(h) {
		add(errf("inbound.clientIdentityHeader", "%q is not a header field name", h))
	}
	add(c.Limits.validate())
	seen := map[netip.AddrPort]string{}
	names := map[string]bool{}
	for i, s := range c.Services {
		add(s.validate(fmt.Sprintf("services[%d]", i), seen, names))
	}
	if c.Workload.Identity != "" && !validSPIFFE(c.Workload.Identity) {
		add(errf("workload.identity", "want a SPIFFE id spiffe://<trust-domain>/<path>, got %q", c.Workload.Identity))
	}
	if c.Controller != nil {
		add(validateController(c.Controller))
	}
	return errors.Join(errs...)
}

// validate checks one service at path. seen holds the virtual address and
// port pairs of the services before it, names their names.
func (s *Service) validate(path string, seen map[netip.AddrPort]string, names map[string]bool) error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	if s.Name == "" {
		add(errf(joinPath(path, "name"), "required"))
	}
	if s.Namespace == "" {
		add(errf(joinPath(path, "namespace"), "required"))
	}
	key := s.Name + "." + s.Namespace
	if names[key] {
		add(errf(path, "service %s is listed twice", key))
	}
	names[key] = true
	if len(s.Addresses) == 0 {
		add(errf(joinPath(path, "addresses"), "at least one virtual address is required"))
	}
	if len(s.Ports) == 0 {
		add(errf(joinPath(path, "ports"), "at least one port is required"))
	}
	for j, a := range s.Addresses {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			add(errf(fmt.Sprintf("%s.addresses[%d]", path, j), "want an IP address, got %q", a))
			continue
		}
		for k, p := range s.Ports {
			ap := netip.AddrPortFrom(ip.Unmap(), uint16(p.Port))
			if other, dup := seen[ap]; dup && validPort(p.Port) {
				add(errf(fmt.Sprintf("%s.ports[%d]", path, k), "%s is already taken by service %s", ap, other))
			}
			seen[ap] = key
		}
	}
	for j, p := range s.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", path, j)
		if !validPort(p.Port) {
			add(errf(joinPath(pp, "port"), "want a port 1-65535, got %d", p.Port))
		}
		if !validPort(p.TargetPort) {
			add(errf(joinPath(pp, "targetPort"), "want a port 1-65535, got %d", p.TargetPort))
		}
		if p.Protocol != ProtocolDetect && p.Protocol != ProtocolOpaque {
			add(errf(joinPath(pp, "protocol"), "want %q or %q, got %q", ProtocolDetect, ProtocolOpaque, p.Protocol))
		}
	}
	for j, e := range s.Endpoints {
		ep := fmt.Sprintf("%s.endpoints[%d]", path, j)
		if _, err := netip.ParseAddr(e.Address); err != nil {
			add(errf(joinPath(ep, "address"), "want an IP address, got %q", e.Address))
		}
		if *e.Weight < 0 {
			add(errf(joinPath(ep, "weight"), "must not be negative, got %d", *e.Weight))
		}
		if e.Identity != "" && !validSPIFFE(e.Identity) {
			add(errf(joinPath(ep, "identity"), "want a SPIFFE id spiffe://<trust-domain>/<path>, got %q", e.Identity))
		}
		if e.Meshed && e.Identity == "" {
			add(errf(joinPath(ep, "identity"), "required for a meshed endpoint"))
		}
	}
	return errors.Join(errs...)
}

// validateController checks what the sidecar needs to reach the
// controller before it holds a certificate; the runner uses it at start.
func validateController(b *meshapi.Bootstrap) error {
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	host, port, err := net.SplitHostPort(b.Address)
	if err != nil {
		add(errf("controller.address", "want host:port: %v", err))
	} else if n, err := strconv.Atoi(port); host == "" || err != nil || !validPort(n) {
		add(errf("controller.address", "want host:port with a port 1-65535, got %q", b.Address))
	}
	if b.ServerIdentity != "" && !validSPIFFE(b.ServerIdentity) {
		add(errf("controller.serverIdentity", "want a SPIFFE id spiffe://<trust-domain>/<path>, got %q", b.ServerIdentity))
	}
	if len(b.TrustAnchors) == 0 {
		add(errf("controller.trustAnchors", "at least one PEM anchor is required"))
	}
	for i, a := range b.TrustAnchors {
		if _, err := meshapi.ParseAnchor(a); err != nil {
			add(errf(fmt.Sprintf("controller.trustAnchors[%d]", i), "%v", err))
		}
	}
	if b.TokenFile == "" || !filepath.IsAbs(b.TokenFile) {
		add(errf("controller.tokenFile", "want an absolute path, got %q", b.TokenFile))
	}
	return errors.Join(errs...)
}

// validate returns every problem of the limits, joined.
func (l *Limits) validate() error {
	var errs []error
	for _, v := range []struct {
		path string
		n    int
	}{
		{"limits.maxConnections", l.MaxConnections},
		{"limits.maxHeaderCount", l.MaxHeaderCount},
		{"limits.maxHeaderBytes", l.MaxHeaderBytes},
		{"limits.maxConcurrentStreams", l.MaxConcurrentStreams},
		{"limits.maxIdleConnsPerEndpoint", l.MaxIdleConnsPerEndpoint},
	} {
		if v.n < 0 {
			errs = append(errs, errf(v.path, "must not be negative, got %d", v.n))
		}
	}
	if l.MaxHeaderBytes >= 0 && l.MaxHeaderBytes < 1024 {
		errs = append(errs, errf("limits.maxHeaderBytes", "must be at least 1024, got %d", l.MaxHeaderBytes))
	}
	if l.DetectTimeout.D() == 0 {
		errs = append(errs, errf("limits.detectTimeout", "must be positive: a connection whose client never speaks must still fall back to TCP"))
	}
	if l.ConnectTimeout.D() == 0 {
		errs = append(errs, errf("limits.connectTimeout", "must be positive"))
	}
	return errors.Join(errs...)
}

func validPort(p int) bool { return p > 0 && p <= 65535 }

// validSPIFFE checks the shape of a SPIFFE id without parsing its path: the
// identity checks of mTLS will be stricter.
func validSPIFFE(id string) bool {
	const scheme = "spiffe://"
	if len(id) <= len(scheme) || id[:len(scheme)] != scheme {
		return false
	}
	rest := id[len(scheme):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == '/' {
			return i > 0
		}
	}
	return true
}

// validHeaderName reports whether h is an HTTP field name (a token).
func validHeaderName(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return h != ""
}
