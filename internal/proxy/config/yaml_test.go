package config

import (
	"reflect"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"
)

// decodeStrict replaced sigs.k8s.io/yaml.UnmarshalStrict to keep
// sigs.k8s.io out of the sidecar; files that loaded before must load the
// same. The test may import it: tests are not linked into the binary.
func FuzzDecodeStrictMatchesSigsYAML(f *testing.F) {
	for _, s := range []string{
		valid,
		`{"version": "v1", "limits": {"idleTimeout": "1m30s", "maxHeaderCount": 10}}`,
		"version: 1\nworkload: {name: 2.50, namespace: yes}\n",
		"version: v\nVersion: w\n",
		"version: v\nversion: w\n",
		"version: v\nservices: [{name: a, namespace: b, addresses: [10.0.0.1], ports: [{port: 1, targetPort: \"2\"}]}]\n",
		"version: v\nlimits: {idleTimeout: 10}\n",
		"version: v\n1: x\n",
		"version: v\nservices: [{name: a, namespace: b, endpoints: [{address: 10.0.0.1, weight: null}]}]\n",
		"version: &v x\nworkload: {name: *v}\n",
		"version: v\nbogus: 1\n",
		"- 1\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got, want Config
		errGot := decodeStrict(data, &got)
		errWant := sigsyaml.UnmarshalStrict(data, &want)
		if (errGot == nil) != (errWant == nil) {
			t.Fatalf("%q: decodeStrict: %v, sigs.k8s.io/yaml: %v", data, errGot, errWant)
		}
		if errGot == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decodeStrict gives\n%+v\nsigs.k8s.io/yaml\n%+v", data, got, want)
		}
	})
}
