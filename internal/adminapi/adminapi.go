// Package adminapi holds the wire types of the proxy's admin API. The proxy
// serves them and meshctl reads them, so both sides import this package and
// cannot drift apart. Every JSON document carries APIVersion; a change that
// removes or renames a field needs a new version.
package adminapi

import "github.com/meshctl/mesh/internal/wellknown"

// APIVersion is the version of the documents in this package:
// "adminapi.meshctl.dev/v1".
const APIVersion = "adminapi." + wellknown.Domain + "/v1"

// Error is the body of every admin response that is not a success.
type Error struct {
	APIVersion string `json:"apiVersion"`
	// Status repeats the HTTP status code so that a saved body stays
	// meaningful on its own.
	Status int    `json:"status"`
	Error  string `json:"error"`
}

// Status answers the POST endpoints (/drain, /shutdown, /logging, /reload).
type Status struct {
	APIVersion string `json:"apiVersion"`
	Message    string `json:"message"`
	// LogLevel is set by /logging: the level in force after the call.
	LogLevel string `json:"logLevel,omitempty"`
	// ConfigVersion is set by /reload: the version in force after the call.
	ConfigVersion string `json:"configVersion,omitempty"`
}

// ConfigDump is the proxy's configuration snapshot in force, as /config_dump
// returns it. Config is the validated configuration with defaults applied, in
// the same shape as the configuration file.
type ConfigDump struct {
	APIVersion string `json:"apiVersion"`
	// Version is the version string of the snapshot (the file's `version`).
	Version string `json:"version"`
	// Source is where the snapshot came from (a file path).
	Source string `json:"source"`
	// LoadedAt is when the snapshot was swapped in, RFC 3339.
	LoadedAt string `json:"loadedAt"`
	Config   any    `json:"config"`
}

// Endpoints lists, for each service the proxy knows, its endpoints and their
// balancing state, as /endpoints returns it.
type Endpoints struct {
	APIVersion    string             `json:"apiVersion"`
	ConfigVersion string             `json:"configVersion"`
	Services      []ServiceEndpoints `json:"services"`
}

// ServiceEndpoints is one port of one service with its endpoints.
type ServiceEndpoints struct {
	Name      string     `json:"name"`
	Namespace string     `json:"namespace"`
	Port      int        `json:"port"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one endpoint of a service.
type Endpoint struct {
	Address  string `json:"address"`
	Identity string `json:"identity,omitempty"`
	Weight   int    `json:"weight"`
	// Active is the number of requests and connections in flight to it.
	Active int64 `json:"active"`
}

// Listeners lists the proxy's listeners, as /listeners returns it.
type Listeners struct {
	APIVersion string     `json:"apiVersion"`
	Draining   bool       `json:"draining"`
	Listeners  []Listener `json:"listeners"`
}

// Listener is one listening socket of the proxy.
type Listener struct {
	// Name is "outbound", "inbound" or "admin".
	Name    string `json:"name"`
	Address string `json:"address"`
	// ActiveConnections is the number of accepted connections still open.
	ActiveConnections int64 `json:"activeConnections"`
}

// Ready answers GET /ready and GET /live.
type Ready struct {
	APIVersion string `json:"apiVersion"`
	Ready      bool   `json:"ready"`
	// Reason says why the proxy is not ready ("no configuration",
	// "draining"); empty when ready.
	Reason string `json:"reason,omitempty"`
}
