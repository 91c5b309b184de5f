package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
)

// Load reads, validates and indexes the configuration file at path. YAML and
// JSON are both accepted; unknown keys are errors so that a typo does not
// silently fall back to a default.
func Load(path string) (*Snapshot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(data, path)
}

// Parse validates and indexes a configuration document. source names it in
// errors and in /config_dump.
func Parse(data []byte, source string) (*Snapshot, error) {
	var c Config
	if err := decodeStrict(data, &c); err != nil {
		return nil, fmt.Errorf("parsing config %s: %w", source, err)
	}
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("validating config %s: %w", source, err)
	}
	return newSnapshot(c, source)
}

func (c *Config) validate() error {
	if c.Version == "" {
		return errf("version", "required")
	}
	for _, a := range []struct{ path, addr string }{
		{"inbound.address", c.Inbound.Address},
		{"outbound.address", c.Outbound.Address},
	} {
		if _, port, err := net.SplitHostPort(a.addr); err != nil {
			return errf(a.path, "want host:port: %v", err)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return errf(a.path, "invalid port %q", port)
		}
	}
	switch c.Inbound.ForwardTo {
	case ForwardOriginal, ForwardLoopback:
	default:
		return errf("inbound.forwardTo", "want %q or %q, got %q", ForwardOriginal, ForwardLoopback, c.Inbound.ForwardTo)
	}
	for i, p := range c.Inbound.OpaquePorts {
		if !validPort(p) {
			return errf(fmt.Sprintf("inbound.opaquePorts[%d]", i), "want a port 1-65535, got %d", p)
		}
	}
	for i, p := range c.Outbound.OpaquePorts {
		if !validPort(p) {
			return errf(fmt.Sprintf("outbound.opaquePorts[%d]", i), "want a port 1-65535, got %d", p)
		}
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	seen := map[netip.AddrPort]string{}
	names := map[string]bool{}
	for i, s := range c.Services {
		path := fmt.Sprintf("services[%d]", i)
		if s.Name == "" {
			return errf(joinPath(path, "name"), "required")
		}
		if s.Namespace == "" {
			return errf(joinPath(path, "namespace"), "required")
		}
		key := s.Name + "." + s.Namespace
		if names[key] {
			return errf(path, "service %s is listed twice", key)
		}
		names[key] = true
		if len(s.Addresses) == 0 {
			return errf(joinPath(path, "addresses"), "at least one virtual address is required")
		}
		if len(s.Ports) == 0 {
			return errf(joinPath(path, "ports"), "at least one port is required")
		}
		for j, a := range s.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return errf(fmt.Sprintf("%s.addresses[%d]", path, j), "want an IP address, got %q", a)
			}
			for k, p := range s.Ports {
				ap := netip.AddrPortFrom(ip.Unmap(), uint16(p.Port))
				if other, dup := seen[ap]; dup && validPort(p.Port) {
					return errf(fmt.Sprintf("%s.ports[%d]", path, k), "%s is already taken by service %s", ap, other)
				}
				seen[ap] = key
			}
		}
		for j, p := range s.Ports {
			pp := fmt.Sprintf("%s.ports[%d]", path, j)
			if !validPort(p.Port) {
				return errf(joinPath(pp, "port"), "want a port 1-65535, got %d", p.Port)
			}
			if !validPort(p.TargetPort) {
				return errf(joinPath(pp, "targetPort"), "want a port 1-65535, got %d", p.TargetPort)
			}
			if p.Protocol != ProtocolDetect && p.Protocol != ProtocolOpaque {
				return errf(joinPath(pp, "protocol"), "want %q or %q, got %q", ProtocolDetect, ProtocolOpaque, p.Protocol)
			}
		}
		for j, e := range s.Endpoints {
			ep := fmt.Sprintf("%s.endpoints[%d]", path, j)
			if _, err := netip.ParseAddr(e.Address); err != nil {
				return errf(joinPath(ep, "address"), "want an IP address, got %q", e.Address)
			}
			if *e.Weight < 0 {
				return errf(joinPath(ep, "weight"), "must not be negative, got %d", *e.Weight)
			}
			if e.Identity != "" && !validSPIFFE(e.Identity) {
				return errf(joinPath(ep, "identity"), "want a SPIFFE id spiffe://<trust-domain>/<path>, got %q", e.Identity)
			}
		}
	}
	if c.Workload.Identity != "" && !validSPIFFE(c.Workload.Identity) {
		return errf("workload.identity", "want a SPIFFE id spiffe://<trust-domain>/<path>, got %q", c.Workload.Identity)
	}
	return nil
}

func (l *Limits) validate() error {
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
			return errf(v.path, "must not be negative, got %d", v.n)
		}
	}
	if l.MaxHeaderBytes < 1024 {
		return errf("limits.maxHeaderBytes", "must be at least 1024, got %d", l.MaxHeaderBytes)
	}
	if l.DetectTimeout.D() == 0 {
		return errf("limits.detectTimeout", "must be positive: a connection whose client never speaks must still fall back to TCP")
	}
	if l.ConnectTimeout.D() == 0 {
		return errf("limits.connectTimeout", "must be positive")
	}
	return nil
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
