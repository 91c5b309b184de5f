package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every problem of a file is reported at once, each as
// file:line:column: key path: what, in the order of the file.
func TestErrorsNameFileLineColumnAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{{
		name: "unknown nested key, YAML",
		doc:  "version: v1\nlimits:\n  conectTimeout: 5s\n",
		want: []string{"proxy.yaml:3:3: limits.conectTimeout: unknown key (did you mean connectTimeout?)"},
	}, {
		name: "unknown key in a list entry",
		doc:  "version: v1\nservices:\n- name: a\n  namespace: b\n  addresses: [10.0.0.1]\n  ports:\n  - port: 80\n    protocl: opaque\n",
		want: []string{"proxy.yaml:8:5: services[0].ports[0].protocl: unknown key (did you mean protocol?)"},
	}, {
		name: "bad duration",
		doc:  "version: v1\nlimits:\n  idleTimeout: 5 minutes\n",
		want: []string{`proxy.yaml:3:16: limits.idleTimeout: want a duration string such as "10s": time: unknown unit " minutes" in duration "5 minutes"`},
	}, {
		name: "wrong type",
		doc:  "version: v1\nlimits:\n  maxConnections: lots\ninbound: [1]\n",
		want: []string{
			`proxy.yaml:3:19: limits.maxConnections: want an integer, got "lots"`,
			`proxy.yaml:4:10: inbound: want a mapping, got a list`,
		},
	}, {
		name: "several problems, decoding",
		doc:  "version: v1\nbogus: 1\nlimits:\n  conectTimeout: 5s\n  idleTimeout: x\n  maxHeaderBytes: 1.5\n",
		want: []string{
			"proxy.yaml:2:1: bogus: unknown key",
			"proxy.yaml:4:3: limits.conectTimeout: unknown key (did you mean connectTimeout?)",
			`proxy.yaml:5:16: limits.idleTimeout: want a duration string such as "10s": time: invalid duration "x"`,
			"proxy.yaml:6:19: limits.maxHeaderBytes: want an integer, got 1.5",
		},
	}, {
		name: "several problems, validation",
		doc:  "version: v1\ninbound:\n  forwardTo: elsewhere\nlimits:\n  maxHeaderBytes: 10\nservices:\n- namespace: b\n  addresses: [10.0.0.1, nope]\n  ports: [{port: 80, targetPort: 70000}]\n",
		want: []string{
			`proxy.yaml:3:14: inbound.forwardTo: want "original" or "loopback", got "elsewhere"`,
			"proxy.yaml:5:19: limits.maxHeaderBytes: must be at least 1024, got 10",
			"proxy.yaml:7:3: services[0].name: required",
			`proxy.yaml:8:25: services[0].addresses[1]: want an IP address, got "nope"`,
			"proxy.yaml:9:34: services[0].ports[0].targetPort: want a port 1-65535, got 70000",
		},
	}, {
		name: "JSON",
		doc:  "{\n  \"version\": \"v1\",\n  \"limits\": {\n    \"conectTimeout\": \"5s\",\n    \"idleTimeout\": 10\n  }\n}\n",
		want: []string{
			"proxy.yaml:4:5: limits.conectTimeout: unknown key (did you mean connectTimeout?)",
			`proxy.yaml:5:20: limits.idleTimeout: want a duration string such as "10s", got 10`,
		},
	}, {
		name: "missing required key of the document",
		doc:  "limits: {}\n",
		want: []string{"proxy.yaml: version: required"},
	}, {
		name: "syntax",
		doc:  "version: v1\nlimits:\n  a: [1\n",
		want: []string{"proxy.yaml:3: did not find expected ',' or ']'"},
	}, {
		name: "key given twice",
		doc:  "version: v1\nversion: v2\n",
		want: []string{`proxy.yaml:2: key "version" already set in map`},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "proxy.yaml")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			if got, want := err.Error(), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("error\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// Load names the file by the path it was given, and a document with no
// problems has no error.
func TestLoadNamesThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	os.WriteFile(path, []byte("version: v1\nlimits: {connectTimeout: 2s, conectTimeout: 5s}\n"), 0o644)
	_, err := Load(path)
	if err == nil || err.Error() != path+":2:30: limits.conectTimeout: unknown key (did you mean connectTimeout?)" {
		t.Errorf("Load: %v", err)
	}
	os.WriteFile(path, []byte("version: v1\nlimits: {connectTimeout: 2s}\n"), 0o644)
	if _, err := Load(path); err != nil {
		t.Errorf("Load of a valid file: %v", err)
	}
}

// Where locate cannot follow the document (an alias), the problems keep
// their key paths and lose only the position.
func TestErrorsWithoutPositions(t *testing.T) {
	_, err := Parse([]byte("version: &v v1\nworkload: {name: *v}\nlimits: {conectTimeout: 1s}\n"), "proxy.yaml")
	if err == nil || err.Error() != "proxy.yaml: limits.conectTimeout: unknown key (did you mean connectTimeout?)" {
		t.Errorf("error %v", err)
	}
}
