package config

import (
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

// v3Positions walks what yaml.v3 parsed into the same maps locate builds.
func v3Positions(n *yaml.Node, path string, keys, values map[string]position) {
	values[path] = position{n.Line, n.Column}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			kp := joinKey(path, k.Value)
			keys[kp] = position{k.Line, k.Column}
			v3Positions(n.Content[i+1], kp, keys, values)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			v3Positions(c, path+"["+strconv.Itoa(i)+"]", keys, values)
		}
	}
}

// Wherever locate gives a position, it is yaml.v3's; and it finds every
// key yaml.v3 finds. The test may import yaml.v3: tests are not linked
// into the sidecar.
func FuzzLocateMatchesYAMLv3(f *testing.F) {
	for _, s := range []string{
		valid,
		`{"version": "v1", "limits": {"idleTimeout": "1m30s", "maxHeaderCount": 10}}`,
		"{\n  \"version\": \"v1\",\n  \"services\": [\n    {\"name\": \"a\", \"ports\": [{\"port\": 80}]}\n  ]\n}\n",
		"version: v\nlimits:\n  conectTimeout: 1s\n  idleTimeout: x\n",
		"# comment\n---\nversion: 'v''1' # trailing\nservices:\n- name: a\n  addresses:\n    - 10.0.0.1\n  ports: [{port: 80}, {port: 81, protocol: opaque}]\n-   name: b\n    namespace: \"c\"\n",
		"version: |\n  multi\n  line\n\nlimits: {}\n",
		"version: >-\n    folded\n    text\n# c\ninbound:\n  address: :15006\n",
		"a:\n  b:\n    c: 1\n  d: plain\n    continued\ne: [1, [2, 3], {f: g}]\n",
		"version: ünï\nworkload: {name: ☃, namespace: x}\n",
		"key:\nnext: 1\n",
		"- a\n- - b\n  - c\n-\n- d: e\n  f: g\n",
		"version: &v x\nworkload: {name: *v}\n",
		"\"quoted key\": 1\n'single': 2\n",
		"a: b # c\r\nd: e\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got := locate(data) // on any input: it must not panic
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) != 1 {
			return
		}
		if got == nil {
			return
		}
		keys, values := map[string]position{}, map[string]position{}
		v3Positions(doc.Content[0], "", keys, values)
		for p, pos := range got.keys {
			if want, ok := keys[p]; !ok || want != pos {
				t.Fatalf("%q: key %q at %v, yaml.v3 says %v (found %v)", data, p, pos, want, ok)
			}
		}
		for p, pos := range got.values {
			if want, ok := values[p]; !ok || want != pos {
				t.Fatalf("%q: value %q at %v, yaml.v3 says %v (found %v)", data, p, pos, want, ok)
			}
		}
		for p := range keys {
			if _, ok := got.keys[p]; !ok {
				t.Fatalf("%q: yaml.v3 has key %q, locate has not", data, p)
			}
		}
	})
}
