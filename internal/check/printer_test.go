package check

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	"github.com/meshctl/mesh/internal/golden"
)

// fixedRun is a run with every kind of result: passes, a retried check that
// finally failed, a multi-line error and a warning.
func fixedRun() ([]Result, Summary) {
	hint := func(a string) string { return HintBase + a }
	results := []Result{
		{Category: "kubernetes-api", Description: "can initialize the client", HintURL: hint("k8s-api-client"), Severity: Fatal},
		{Category: "kubernetes-api", Description: "can query the Kubernetes API", HintURL: hint("k8s-api-query"), Severity: Fatal},
		{Category: "control-plane-pods", Description: "the controller pods are ready", HintURL: hint("cp-pods-ready"), Retrying: true,
			Err: errors.New("pod meshctl-controller-6d4f9: not scheduled yet")},
		{Category: "control-plane-pods", Description: "the controller pods are ready", HintURL: hint("cp-pods-ready"), Retrying: true,
			Err: errors.New("pod meshctl-controller-6d4f9: container controller is waiting: ContainerCreating")},
		{Category: "control-plane-pods", Description: "the controller pods are ready", HintURL: hint("cp-pods-ready"),
			Err: errors.New("pod meshctl-controller-6d4f9: container controller is waiting: ImagePullBackOff: Back-off pulling image\npod meshctl-controller-8b2c1: cannot be scheduled: 0/1 nodes are available")},
		{Category: "identity", Description: "the trust anchors are valid CA certificates", HintURL: hint("identity-trust-anchors"), Severity: Fatal},
		{Category: "identity", Description: "the trust anchors and issuer are valid for at least 60 days", HintURL: hint("identity-expiry"), Severity: Warning,
			Err: errors.New(`issuer: certificate "issuer.identity.cluster.local" expires in 29 days, at 2026-12-20T15:00:00Z`)},
	}
	var final []Result
	for _, r := range results {
		if !r.Retrying {
			final = append(final, r)
		}
	}
	return results, Summary{Success: false, Results: final}
}

func TestPrinters(t *testing.T) {
	results, sum := fixedRun()
	passing := Summary{Success: true, Results: []Result{results[0], results[1], results[5]}}
	for _, tc := range []struct {
		name    string
		format  string
		results []Result
		sum     Summary
	}{
		{"table-failed", FormatTable, results, sum},
		{"short-failed", FormatShort, results, sum},
		{"json-failed", FormatJSON, results, sum},
		{"table-passed", FormatTable, passing.Results, passing},
		{"short-passed", FormatShort, passing.Results, passing},
		{"json-passed", FormatJSON, passing.Results, passing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			p, err := NewPrinter(tc.format, &buf, Plain{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.results {
				p.Print(r)
			}
			if err := p.Finish(tc.sum); err != nil {
				t.Fatal(err)
			}
			if tc.format == FormatJSON && !json.Valid(buf.Bytes()) {
				t.Errorf("the json output does not parse:\n%s", buf.String())
			}
			golden.Check(t, filepath.Join("testdata", tc.name+".golden"), buf.Bytes())
		})
	}
}

func TestNewPrinterRejectsUnknownFormats(t *testing.T) {
	if _, err := NewPrinter("wide", &bytes.Buffer{}, Plain{}); err == nil {
		t.Fatal("NewPrinter accepted format wide")
	}
}
