// Package version holds the build's version, stamped by the linker:
//
//	-ldflags "-X github.com/meshctl/mesh/internal/version.Version=v0.1.0
//	          -X github.com/meshctl/mesh/internal/version.Commit=abc1234"
package version

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release version ("v0.1.0"), or "dev" in an unstamped build.
var Version = "dev"

// Commit is the source revision of the build, when known.
var Commit = ""

// Info describes a build; it is the JSON shape of `version -o json` for both
// binaries and of the version the control plane reports.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns this build's Info. An unstamped build falls back to the module
// version and VCS revision that the Go toolchain recorded, when there are any.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if info.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Commit == "" {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					info.Commit = s.Value
				}
			}
		}
	}
	return info
}

// LabelValue is v as a Kubernetes label value, the way the chart's
// mesh.version helper writes it: "+" (build metadata, "+dirty") becomes "_",
// at most 63 characters, no trailing separator. The two must agree, since
// checks compare labels written by either.
func LabelValue(v string) string {
	v = strings.ReplaceAll(v, "+", "_")
	if len(v) > 63 {
		v = v[:63]
	}
	for _, suffix := range []string{"-", "_", "."} {
		v = strings.TrimSuffix(v, suffix)
	}
	return v
}
