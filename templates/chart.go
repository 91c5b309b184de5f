// Package templates embeds the Helm chart of the mesh's control plane, so that
// meshctl renders exactly the chart that `helm template` renders from this
// folder. The chart files are the package's data; .helmignore keeps this Go
// file out of the chart.
package templates

import (
	"embed"
	"io/fs"
)

// files holds the chart. "all:" keeps _helpers.tpl, which embed would
// otherwise skip for its leading underscore.
//
//go:embed Chart.yaml values.yaml values.schema.json all:templates
var files embed.FS

// Chart returns the chart's files, rooted at the chart folder (Chart.yaml,
// values.yaml, values.schema.json, templates/...).
func Chart() fs.FS { return files }
