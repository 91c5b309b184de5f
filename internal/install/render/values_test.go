package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"strings"
	"testing"

	"github.com/meshctl/mesh/templates"
)

// fakeFiles is a ReadFile over a map.
func fakeFiles(files map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		data, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("open %s: %w", name, fs.ErrNotExist)
		}
		return []byte(data), nil
	}
}

func TestLoadValues(t *testing.T) {
	files := fakeFiles(map[string]string{
		"base.yaml":     "controller:\n  replicas: 2\n  logLevel: debug\ntrustDomain: base.example\n",
		"override.yaml": "controller:\n  replicas: 4\n",
		"anchors.pem":   "-----BEGIN CERTIFICATE-----\n",
		"empty.yaml":    "# nothing\n",
	})
	got, err := LoadValues(ValueSources{
		Files:     []string{"base.yaml", "override.yaml", "empty.yaml"},
		Set:       []string{"controller.replicas=5,image.tag=v1", "webhook.timeoutSeconds=7"},
		SetString: []string{"image.tag=007"},
		SetFile:   []string{"identity.trustAnchorsPEM=anchors.pem"},
		ReadFile:  files,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"controller":  map[string]any{"replicas": 5.0, "logLevel": "debug"},
		"trustDomain": "base.example",
		"image":       map[string]any{"tag": "007"},
		"webhook":     map[string]any{"timeoutSeconds": 7.0},
		"identity":    map[string]any{"trustAnchorsPEM": "-----BEGIN CERTIFICATE-----\n"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

// Values files mean what they mean to Helm, whose YAML is YAML 1.1: "yes"
// is a boolean there.
func TestLoadValuesHelmSemantics(t *testing.T) {
	got, err := LoadValues(ValueSources{Files: []string{"v.yaml"}, ReadFile: fakeFiles(map[string]string{"v.yaml": "controller:\n  highAvailability: yes\n  replicas: 3\n"})})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"controller": map[string]any{"highAvailability": true, "replicas": 3.0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestLoadValuesErrors(t *testing.T) {
	files := fakeFiles(map[string]string{
		"syntax.yaml":    "controller:\n  replicas: 3\n  logLevel: [debug\n",
		"tab.yaml":       "controller:\n\treplicas: 3\n",
		"list.yaml":      "- a\n- b\n",
		"dup.yaml":       "controller:\n  replicas: 3\n  replicas: 4\n",
		"intkey.yaml":    "controller:\n  1: x\n",
		"twodocs.yaml":   "a: 1\n---\nb: 2\n",
		"indent.yaml":    "controller:\n  replicas: 3\n bad: x\n",
		"mapinlist.yaml": "controller:\n  tolerations:\n    - key: a\n      key: b\n",
	})
	for _, tc := range []struct {
		name string
		src  ValueSources
		want string
	}{
		{"syntax error", ValueSources{Files: []string{"syntax.yaml"}}, "syntax.yaml:3:13: sequence end token ']' not found"},
		{"tab", ValueSources{Files: []string{"tab.yaml"}}, "tab.yaml:2:1: found character '\t' that cannot start any token"},
		{"bad indentation", ValueSources{Files: []string{"indent.yaml"}}, "indent.yaml:3:2: value is not allowed in this context"},
		{"not a mapping", ValueSources{Files: []string{"list.yaml"}}, "list.yaml:1:1: values must be a mapping of keys to values, not a list"},
		{"duplicate key", ValueSources{Files: []string{"dup.yaml"}}, `dup.yaml:3:3: mapping key "replicas" already defined at [2:3]`},
		{"duplicate key in a list item", ValueSources{Files: []string{"mapinlist.yaml"}}, `mapinlist.yaml:4:7: mapping key "key" already defined at [3:7]`},
		{"integer key", ValueSources{Files: []string{"intkey.yaml"}}, `intkey.yaml:2:3: key "1" (int) is not a string`},
		{"two documents", ValueSources{Files: []string{"twodocs.yaml"}}, "twodocs.yaml:2:1: a values file holds one YAML document, found another"},
		{"missing file", ValueSources{Files: []string{"nope.yaml"}}, "reading values file: open nope.yaml: file does not exist"},
		{"bad --set", ValueSources{Set: []string{"controller.replicas"}}, `parsing --set "controller.replicas": key "replicas" has no value`},
		{"bad --set index", ValueSources{Set: []string{"a[x]=1"}}, `parsing --set "a[x]=1": `},
		{"bad --set-string", ValueSources{SetString: []string{"a.b"}}, `parsing --set-string "a.b": key "b" has no value`},
		{"--set-file without a path", ValueSources{SetFile: []string{"identity.trustAnchorsPEM"}}, `parsing --set-file "identity.trustAnchorsPEM": want key=path`},
		{"--set-file of a missing file", ValueSources{SetFile: []string{"webhook.certPEM=nope.pem"}}, `parsing --set-file "webhook.certPEM=nope.pem": reading file: open nope.pem: file does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.src.ReadFile = files
			_, err := LoadValues(tc.src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateValues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values string // JSON
		want   []string
	}{
		{"defaults", `{}`, nil},
		{"everything valid", `{"controller":{"replicas":3,"highAvailability":true,"tolerations":[{"key":"k","operator":"Exists","effect":"NoSchedule"}],"nodeSelector":{"kubernetes.io/arch":"arm64"}},"proxy":{"resources":{"requests":{"cpu":"250m","memory":1024}}}}`, nil},
		{"unknown key", `{"controller":{"replica":3}}`, []string{
			"unknown value key controller.replica: allowed keys under controller are highAvailability, logLevel, nodeSelector, podDisruptionBudget, priorityClassName, replicas, resources, tolerations",
		}},
		{"unknown top-level key", `{"contoller":{}}`, []string{
			"unknown value key contoller: allowed keys at the top level are controller, identity, image, mtls, proxy, trustDomain, webhook",
		}},
		{"unknown nested key", `{"identity":{"issuer":{"cert":"x"}}}`, []string{
			"unknown value key identity.issuer.cert: allowed keys under identity.issuer are certPEM, keyPEM",
		}},
		{"wrong type", `{"controller":{"replicas":"three"}}`, []string{`controller.replicas: want integer, got string "three"`}},
		{"fraction for an integer", `{"controller":{"replicas":1.5}}`, []string{`controller.replicas: want integer, got number 1.5`}},
		{"object for a string", `{"trustDomain":{"a":1}}`, []string{`trustDomain: want string, got object`}},
		{"enum", `{"webhook":{"failurePolicy":"Sometimes"}}`, []string{`webhook.failurePolicy: "Sometimes" is not one of Ignore, Fail`}},
		{"minimum", `{"controller":{"replicas":0}}`, []string{`controller.replicas: 0 is less than the minimum 1`}},
		{"maximum", `{"webhook":{"timeoutSeconds":31}}`, []string{`webhook.timeoutSeconds: 31 is more than the maximum 30`}},
		{"pattern", `{"identity":{"certificateLifetime":"1 day"}}`, []string{`identity.certificateLifetime: "1 day" does not match ^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`}},
		{"empty", `{"image":{"repository":""}}`, []string{`image.repository: must not be empty`}},
		{"list item", `{"controller":{"tolerations":[{"operator":"Maybe","colour":"red"}]}}`, []string{
			"unknown value key controller.tolerations[0].colour: allowed keys under controller.tolerations[0] are effect, key, operator, tolerationSeconds, value",
			`controller.tolerations[0].operator: "Maybe" is not one of Exists, Equal`,
		}},
		{"map value", `{"controller":{"nodeSelector":{"kubernetes.io/os":1}}}`, []string{`controller.nodeSelector["kubernetes.io/os"]: want string, got integer 1`}},
		{"quantity", `{"proxy":{"resources":{"limits":{"memory":"lots"}}}}`, []string{`proxy.resources.limits.memory: "lots" does not match`}},
		{"all problems, sorted by key", `{"webhook":{"timeoutSeconds":"x"},"controller":{"replicas":-1},"zzz":1,"aaa":2}`, []string{
			"unknown value key aaa: allowed keys at the top level are controller, identity, image, mtls, proxy, trustDomain, webhook",
			"controller.replicas: -1 is less than the minimum 1",
			`webhook.timeoutSeconds: want integer, got string "x"`,
			"unknown value key zzz: allowed keys at the top level are controller, identity, image, mtls, proxy, trustDomain, webhook",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var values map[string]any
			if err := json.Unmarshal([]byte(tc.values), &values); err != nil {
				t.Fatal(err)
			}
			err := ValidateValues(values)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var invalid *InvalidValuesError
			if !errors.As(err, &invalid) {
				t.Fatalf("error %v, want an *InvalidValuesError", err)
			}
			if len(invalid.Problems) != len(tc.want) {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(invalid.Problems, "\n"), strings.Join(tc.want, "\n"))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(invalid.Problems[i], w) {
					t.Errorf("problem %d: %q, want it to start with %q", i, invalid.Problems[i], w)
				}
			}
		})
	}
}

// The --set parser gives int64 where files give float64; both validate.
func TestValidateValuesFromSet(t *testing.T) {
	values, err := LoadValues(ValueSources{Set: []string{"controller.replicas=3,controller.highAvailability=true"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateValues(values); err != nil {
		t.Fatal(err)
	}
	values, err = LoadValues(ValueSources{SetString: []string{"controller.replicas=3"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateValues(values); err == nil || !strings.Contains(err.Error(), `controller.replicas: want integer, got string "3"`) {
		t.Fatalf("error %v, want the type mismatch", err)
	}
}

// The validator must understand every keyword the schema uses; otherwise a
// constraint would silently not be enforced.
func TestSchemaUsesOnlySupportedKeywords(t *testing.T) {
	data, err := fs.ReadFile(templates.Chart(), "values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, s any)
	walk = func(path string, s any) {
		m, ok := s.(map[string]any)
		if !ok {
			return
		}
		for k, v := range m {
			if !supportedKeywords[k] {
				t.Errorf("%s: keyword %q is not supported by ValidateValues", path, k)
			}
			switch k {
			case "properties", "definitions":
				for name, sub := range v.(map[string]any) {
					walk(path+"/"+k+"/"+name, sub)
				}
			case "items", "additionalProperties":
				walk(path+"/"+k, v)
			}
			if k == "additionalProperties" && v == true {
				t.Errorf("%s: additionalProperties true lets unknown keys through", path)
			}
		}
		if m["type"] == "object" && m["additionalProperties"] == nil {
			t.Errorf("%s: an object without additionalProperties accepts unknown keys", path)
		}
	}
	walk("#", doc)
}

// Every default value is valid, and every key of values.yaml is in the schema.
func TestDefaultsAreValid(t *testing.T) {
	if err := ValidateValues(Defaults()); err != nil {
		t.Fatal(err)
	}
}

func TestMergeValues(t *testing.T) {
	base := map[string]any{"a": map[string]any{"b": 1.0, "c": 2.0}, "l": []any{1.0}, "keep": "x"}
	override := map[string]any{"a": map[string]any{"c": 3.0, "d": 4.0}, "l": []any{2.0, 3.0}, "keep": nil}
	got := MergeValues(base, override)
	want := map[string]any{"a": map[string]any{"b": 1.0, "c": 3.0, "d": 4.0}, "l": []any{2.0, 3.0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	got["a"].(map[string]any)["b"] = 99.0
	if base["a"].(map[string]any)["b"] != 1.0 {
		t.Error("MergeValues shares maps with its input")
	}
}

func TestNonDefault(t *testing.T) {
	if got := NonDefault(Defaults()); len(got) != 0 {
		t.Errorf("NonDefault(Defaults()) = %v, want empty", got)
	}
	user, err := LoadValues(ValueSources{Set: []string{
		"controller.replicas=3",
		"controller.logLevel=info", // the default: not stored
		"controller.nodeSelector=null",
		"identity.issuer.keyPEM=secret",
		"webhook.certPEM=cert",
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := NonDefault(user)
	want := map[string]any{"controller": map[string]any{"replicas": 3.0, "nodeSelector": nil}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NonDefault = %v, want %v", got, want)
	}
	// Merged back onto the defaults, the stored values give what the user
	// asked for, credentials aside.
	if a, b := StripCredentials(MergeValues(Defaults(), got)), StripCredentials(MergeValues(Defaults(), user)); !reflect.DeepEqual(a, b) {
		t.Errorf("round trip:\n%v\n%v", a, b)
	}
}

func TestStripCredentials(t *testing.T) {
	values := map[string]any{"identity": map[string]any{"certificateLifetime": "48h", "trustAnchorsPEM": "x", "issuer": map[string]any{"certPEM": "c", "keyPEM": "k"}}, "webhook": map[string]any{"keyPEM": "k"}}
	got := StripCredentials(values)
	want := map[string]any{"identity": map[string]any{"certificateLifetime": "48h"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, ok := values["webhook"]; !ok {
		t.Error("StripCredentials changed its input")
	}
}
