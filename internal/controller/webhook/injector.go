package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"

	"github.com/meshctl/mesh/internal/inject"
)

// NewInjector returns the Injector of the mesh whose control plane runs in
// meshNamespace: the same transform as `meshctl inject` (internal/inject),
// with the proxy defaults and trust domain of the MeshConfig of each request
// and the trust anchors cluster reads, recording version in the pod's status
// annotation.
func NewInjector(meshNamespace, version string, cluster Cluster) Injector {
	return func(ctx context.Context, req PodRequest) (Decision, error) {
		anchors, err := cluster.TrustAnchors(ctx)
		if err != nil {
			return Decision{}, err
		}
		// A pod being created often has no namespace in its metadata yet;
		// injection needs it to leave control-plane namespaces alone, so it
		// is added for the transform and taken out of the result again.
		doc, added, err := withNamespace(req.Pod, req.Namespace)
		if err != nil {
			return Decision{}, err
		}
		s := inject.NewSettings(req.Config, meshNamespace, version)
		s.TrustAnchors = anchors
		// Unknown when the server does not say: a Job's pod then gets the
		// native sidecar, with a warning.
		s.KubernetesVersion, _ = cluster.KubernetesVersion(ctx)
		out, reports, err := inject.Inject(doc, s)
		if err != nil {
			return Decision{}, err
		}
		if len(reports) != 1 {
			return Decision{}, fmt.Errorf("injection reported %d workloads for one pod", len(reports))
		}
		switch r := reports[0]; r.Outcome {
		case inject.Skipped:
			return Decision{Skipped: r.Reason}, nil
		case inject.Unchanged:
			return Decision{Skipped: "already injected with this configuration"}, nil
		case inject.Injected:
		default:
			return Decision{}, fmt.Errorf("unexpected injection outcome %q", r.Outcome)
		}
		// The splice keeps the input's flow style, which for JSON input is
		// JSON; YAMLToJSON makes sure of it either way.
		if !json.Valid(out) {
			if out, err = yaml.YAMLToJSON(out); err != nil {
				return Decision{}, fmt.Errorf("reading the injected pod: %w", err)
			}
		}
		if added {
			if out, err = withoutNamespace(out); err != nil {
				return Decision{}, err
			}
		}
		d := Decision{Pod: out}
		if w := reports[0].Warning; w != "" {
			d.Warnings = []string{w}
		}
		return d, nil
	}
}

// withNamespace sets metadata.namespace of the pod document if it is empty
// and reports whether it did.
func withNamespace(pod []byte, namespace string) ([]byte, bool, error) {
	obj, err := decodeObject(pod)
	if err != nil {
		return nil, false, err
	}
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	if ns, _ := meta["namespace"].(string); ns != "" || namespace == "" {
		return pod, false, nil
	}
	meta["namespace"] = namespace
	b, err := json.Marshal(obj)
	return b, true, err
}

func withoutNamespace(pod []byte) ([]byte, error) {
	obj, err := decodeObject(pod)
	if err != nil {
		return nil, err
	}
	if meta, ok := obj["metadata"].(map[string]any); ok {
		delete(meta, "namespace")
	}
	return json.Marshal(obj)
}

// decodeObject decodes a JSON object keeping numbers as written.
func decodeObject(doc []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("decoding the pod: %w", err)
	}
	if obj == nil {
		return nil, fmt.Errorf("decoding the pod: not an object")
	}
	return obj, nil
}
