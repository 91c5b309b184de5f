// Package config is the proxy's configuration: the file format and its
// validation, and the compilation of the local settings and a meshapi.Set
// into the immutable routing table that the data path reads (see Table).
// A table is built once, never changed, and swapped in whole (see Store).
//
// There is one model whatever the source: the file's services are
// converted into a meshapi.Set (Config.Set), the same kind of Set the
// controller's pushes build, and both compile through Compile. Routes and
// policies are not in it yet because the proxy does not apply them.
package config

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/meshctl/mesh/internal/meshapi"
	"github.com/meshctl/mesh/internal/wellknown"
)

// Config is the configuration file, as written by people and (later) by the
// controller. JSON and YAML spell it the same way.
type Config struct {
	// Version names this configuration; /config_dump and the logs show it so
	// that one can tell which configuration a proxy runs. Required.
	Version string `json:"version"`
	// Workload is the pod this proxy serves.
	Workload Workload `json:"workload,omitempty"`
	Inbound  Inbound  `json:"inbound,omitempty"`
	Outbound Outbound `json:"outbound,omitempty"`
	Limits   Limits   `json:"limits,omitempty"`
	// Services are the destinations the outbound listener knows by virtual
	// address. A connection to any other address is passed through as TCP.
	Services []Service `json:"services,omitempty"`
	// Controller, when set, is how the sidecar reaches the controller (the
	// mesh API) before it holds a certificate; injection writes it.
	Controller *meshapi.Bootstrap `json:"controller,omitempty"`
}

// Workload describes the local pod.
type Workload struct {
	// Name labels inbound metrics as their destination service. Default
	// "local".
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Identity is the workload's SPIFFE id; recorded, not yet enforced.
	Identity string `json:"identity,omitempty"`
}

// Inbound configures the listener that receives connections redirected from
// the pod's network interface to the application.
type Inbound struct {
	// Address is the listening address. Default ":15101" (every address,
	// IPv4 and IPv6).
	Address string `json:"address,omitempty"`
	// ForwardTo says where accepted connections go: "original" (default) dials
	// the original destination (pod IP and port), "loopback" dials 127.0.0.1
	// on the original port. See docs/proxy.md for why "original" is the
	// default.
	ForwardTo string `json:"forwardTo,omitempty"`
	// OpaquePorts are application ports whose connections skip protocol
	// detection and are forwarded as TCP (server-speaks-first protocols).
	// Absent: DefaultOpaquePorts; an empty list: none.
	OpaquePorts []int `json:"opaquePorts"`
	// ConnectProxyPorts are application ports served by an HTTP CONNECT
	// proxy: only there does a CONNECT answered 2xx become a tunnel;
	// elsewhere the proxy answers CONNECT with 405. Default: none.
	ConnectProxyPorts []int `json:"connectProxyPorts,omitempty"`
	// MTLS is the inbound mTLS mode of every port: "permissive" accepts
	// plaintext beside mesh TLS, "strict" refuses it. Empty: the mode the
	// controller pushes for the mesh, or permissive without a controller.
	MTLS meshapi.MTLSMode `json:"mtls,omitempty"`
	// StrictMTLSPorts and PermissiveMTLSPorts override the mode for single
	// application ports.
	StrictMTLSPorts     []int `json:"strictMTLSPorts,omitempty"`
	PermissiveMTLSPorts []int `json:"permissiveMTLSPorts,omitempty"`
	// ClientIdentityHeader is the request header in which the application
	// receives the verified SPIFFE id of a meshed client. The proxy removes
	// it from every inbound request, so a client cannot forge it, and sets
	// it only on requests that came over mesh TLS. Empty: the header the
	// controller pushes, else DefaultClientIdentityHeader; "-": none.
	ClientIdentityHeader string `json:"clientIdentityHeader,omitempty"`
}

// DefaultClientIdentityHeader carries a meshed client's SPIFFE id to the
// application.
const DefaultClientIdentityHeader = "x-meshctl-client-id"

// Outbound configures the listener that receives the application's own
// connections redirected by the OUTPUT chain.
type Outbound struct {
	// Address is the listening address. Default ":15100": REDIRECT in the
	// OUTPUT chain sends to 127.0.0.1 or ::1, so both families must be bound.
	Address string `json:"address,omitempty"`
	// OpaquePorts are destination ports that skip protocol detection, for
	// every destination, known or not. Absent: DefaultOpaquePorts; an empty
	// list: none.
	OpaquePorts []int `json:"opaquePorts"`
	// ConnectProxyPorts are destination ports of HTTP CONNECT proxies, as
	// for Inbound. Default: none.
	ConnectProxyPorts []int `json:"connectProxyPorts,omitempty"`
}

// DefaultOpaquePorts are the well-known ports of protocols in which the
// server speaks first (SMTP 25 and 587, MySQL 3306 and Galera 4444,
// PostgreSQL 5432, Redis 6379, Elasticsearch transport 9300, memcached
// 11211): detection would only delay them by limits.detectTimeout. Linkerd
// skips the same list.
var DefaultOpaquePorts = []int{25, 587, 3306, 4444, 5432, 6379, 9300, 11211}

// Forwarding targets of the inbound listener.
const (
	ForwardOriginal = "original"
	ForwardLoopback = "loopback"
)

// Protocol hints of a service port.
const (
	// ProtocolDetect peeks at the first bytes to choose HTTP/1, HTTP/2, TLS
	// or TCP.
	ProtocolDetect = "detect"
	// ProtocolOpaque forwards bytes without looking at them.
	ProtocolOpaque = "opaque"
)

// Service is a destination known by virtual address.
type Service struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Addresses are the service's virtual IPs (Kubernetes ClusterIPs).
	Addresses []string      `json:"addresses"`
	Ports     []ServicePort `json:"ports"`
	Endpoints []Endpoint    `json:"endpoints,omitempty"`
}

// ServicePort maps a port of the virtual address to a port of the endpoints.
type ServicePort struct {
	Port int `json:"port"`
	// TargetPort is the endpoints' port. Default: Port.
	TargetPort int `json:"targetPort,omitempty"`
	// Protocol is "detect" (default) or "opaque".
	Protocol string `json:"protocol,omitempty"`
}

// Endpoint is one backend of a service.
type Endpoint struct {
	// Address is the endpoint's IP address.
	Address string `json:"address"`
	// Identity is the SPIFFE id the endpoint must present once mTLS is on;
	// recorded and shown by /endpoints, not yet enforced.
	Identity string `json:"identity,omitempty"`
	// Weight is the endpoint's relative share of new requests. Default 1;
	// 0 takes the endpoint out of rotation.
	Weight *int `json:"weight,omitempty"`
	// Meshed says a proxy serves the endpoint: connections to it use mesh
	// TLS once the proxy holds a certificate. Requires Identity.
	Meshed bool `json:"meshed,omitempty"`
}

// Limits bound what one client can make the proxy hold. Zero values mean the
// default; durations are Go duration strings ("10s"); a negative duration
// turns that timeout off.
type Limits struct {
	// MaxConnections caps the connections open on each listener; beyond it
	// new connections are closed at once. Default 10000.
	MaxConnections int `json:"maxConnections,omitempty"`
	// FDBudget is the most file descriptors the connections of each
	// listener may hold, counting two per connection (its socket and its
	// upstream's); beyond it new connections are closed at once. Zero: a
	// share of RLIMIT_NOFILE taken when the proxy starts (see "File
	// descriptors" in docs/proxy.md).
	FDBudget uint `json:"fdBudget,omitempty"`
	// DetectTimeout is how long the proxy waits for the client's first bytes
	// before treating the connection as opaque TCP. Default 1s.
	DetectTimeout Duration `json:"detectTimeout,omitempty"`
	// ConnectTimeout bounds dialing an upstream. Default 1s.
	ConnectTimeout Duration `json:"connectTimeout,omitempty"`
	// HeaderReadTimeout bounds reading one request's headers. Default 10s.
	HeaderReadTimeout Duration `json:"headerReadTimeout,omitempty"`
	// IdleTimeout closes HTTP connections with no request in flight.
	// Default 60s.
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
	// StreamIdleTimeout ends a request or stream when neither side sends a
	// byte for this long. Default 5m.
	StreamIdleTimeout Duration `json:"streamIdleTimeout,omitempty"`
	// RequestTimeout bounds a whole request and response. Default off.
	RequestTimeout Duration `json:"requestTimeout,omitempty"`
	// TCPIdleTimeout closes a TCP connection when neither side sends a byte
	// for this long. Default 1h.
	TCPIdleTimeout Duration `json:"tcpIdleTimeout,omitempty"`
	// MaxHeaderCount is the most header fields a request may carry (431
	// beyond). Default 100.
	MaxHeaderCount int `json:"maxHeaderCount,omitempty"`
	// MaxHeaderBytes is the most bytes a request's header section may take
	// (431 beyond). Default 61440 (60 KiB).
	MaxHeaderBytes int `json:"maxHeaderBytes,omitempty"`
	// MaxConcurrentStreams caps the streams of one HTTP/2 connection.
	// Default 100.
	MaxConcurrentStreams int `json:"maxConcurrentStreams,omitempty"`
	// MaxIdleConnsPerEndpoint is the most idle HTTP/1 connections kept open
	// to one endpoint for reuse. Default 64.
	MaxIdleConnsPerEndpoint int `json:"maxIdleConnsPerEndpoint,omitempty"`
}

// Duration is a time.Duration written as a Go duration string.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"10s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration string such as \"10s\": %w", err)
	}
	*d = Duration(v)
	return nil
}

// D returns the duration, or 0 when the timeout is off (negative).
func (d Duration) D() time.Duration {
	if d < 0 {
		return 0
	}
	return time.Duration(d)
}

// Default listening addresses: every address, on the mesh's ports.
var (
	DefaultInboundAddress  = ":" + strconv.Itoa(wellknown.ProxyInboundPort)
	DefaultOutboundAddress = ":" + strconv.Itoa(wellknown.ProxyOutboundPort)
)

// Default values of the limits.
const (
	DefaultMaxConnections          = 10000
	DefaultDetectTimeout           = time.Second
	DefaultConnectTimeout          = 1 * time.Second
	DefaultHeaderReadTimeout       = 10 * time.Second
	DefaultIdleTimeout             = 60 * time.Second
	DefaultStreamIdleTimeout       = 5 * time.Minute
	DefaultTCPIdleTimeout          = time.Hour
	DefaultMaxHeaderCount          = 100
	DefaultMaxHeaderBytes          = 60 << 10
	DefaultMaxConcurrentStreams    = 100
	DefaultMaxIdleConnsPerEndpoint = 64
)

// withDefaults returns c with every unset field set to its default.
func (c Config) withDefaults() Config {
	if c.Workload.Name == "" {
		c.Workload.Name = "local"
	}
	if c.Inbound.Address == "" {
		c.Inbound.Address = DefaultInboundAddress
	}
	if c.Inbound.ForwardTo == "" {
		c.Inbound.ForwardTo = ForwardOriginal
	}
	if c.Outbound.Address == "" {
		c.Outbound.Address = DefaultOutboundAddress
	}
	if c.Inbound.OpaquePorts == nil {
		c.Inbound.OpaquePorts = append([]int(nil), DefaultOpaquePorts...)
	}
	if c.Outbound.OpaquePorts == nil {
		c.Outbound.OpaquePorts = append([]int(nil), DefaultOpaquePorts...)
	}
	l := &c.Limits
	setInt(&l.MaxConnections, DefaultMaxConnections)
	setDur(&l.DetectTimeout, DefaultDetectTimeout)
	setDur(&l.ConnectTimeout, DefaultConnectTimeout)
	setDur(&l.HeaderReadTimeout, DefaultHeaderReadTimeout)
	setDur(&l.IdleTimeout, DefaultIdleTimeout)
	setDur(&l.StreamIdleTimeout, DefaultStreamIdleTimeout)
	setDur(&l.TCPIdleTimeout, DefaultTCPIdleTimeout)
	setInt(&l.MaxHeaderCount, DefaultMaxHeaderCount)
	setInt(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setInt(&l.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	setInt(&l.MaxIdleConnsPerEndpoint, DefaultMaxIdleConnsPerEndpoint)
	svcs := make([]Service, len(c.Services))
	for i, s := range c.Services {
		ports := make([]ServicePort, len(s.Ports))
		for j, p := range s.Ports {
			if p.TargetPort == 0 {
				p.TargetPort = p.Port
			}
			if p.Protocol == "" {
				p.Protocol = ProtocolDetect
			}
			ports[j] = p
		}
		s.Ports = ports
		eps := make([]Endpoint, len(s.Endpoints))
		for j, e := range s.Endpoints {
			if e.Weight == nil {
				one := 1
				e.Weight = &one
			}
			eps[j] = e
		}
		s.Endpoints = eps
		svcs[i] = s
	}
	c.Services = svcs
	return c
}

func setInt(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

func setDur(v *Duration, def time.Duration) {
	if *v == 0 {
		*v = Duration(def)
	}
}

// fieldError names the offending key by its path in the file.
type fieldError struct {
	path string
	msg  string
}

func (e fieldError) Error() string { return e.path + ": " + e.msg }

func errf(path, format string, args ...any) error {
	return fieldError{path: path, msg: fmt.Sprintf(format, args...)}
}

func joinPath(parts ...string) string { return strings.Join(parts, ".") }
