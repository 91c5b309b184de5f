package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	goccyyaml "github.com/goccy/go-yaml"
	goccyparser "github.com/goccy/go-yaml/parser"
	"gopkg.in/yaml.v3"
	"helm.sh/helm/v3/pkg/strvals"
	sigsyaml "sigs.k8s.io/yaml"
)

// ValueSources are the user's values as the CLI flags give them, applied in
// Helm's order: Files, then Set, SetString and SetFile; within each, later
// entries win.
type ValueSources struct {
	// Files are YAML values files (-f, --values).
	Files []string
	// Set are --set expressions in Helm's strvals syntax (a.b=1,c[0]=x).
	Set []string
	// SetString are --set-string expressions: every value is a string.
	SetString []string
	// SetFile are --set-file expressions, key=path: the value is the file's
	// content as a string.
	SetFile []string
	// ReadFile reads Files and SetFile paths; nil means os.ReadFile.
	ReadFile func(name string) ([]byte, error)
}

// LoadValues reads and merges the user's values. It does not add the
// chart's defaults, so what it returns is what the user asked for; pass it
// to ValidateValues and Render.
func LoadValues(src ValueSources) (map[string]any, error) {
	readFile := src.ReadFile
	if readFile == nil {
		readFile = os.ReadFile
	}
	values := map[string]any{}
	for _, name := range src.Files {
		data, err := readFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading values file: %w", err)
		}
		fileValues, err := parseValuesYAML(name, data)
		if err != nil {
			return nil, err
		}
		values = MergeValues(values, fileValues)
	}
	for _, expr := range src.Set {
		if err := strvals.ParseInto(expr, values); err != nil {
			return nil, fmt.Errorf("parsing --set %q: %w", expr, err)
		}
		if err := checkExprKeys("--set", expr, strvals.ParseInto); err != nil {
			return nil, err
		}
	}
	for _, expr := range src.SetString {
		if err := strvals.ParseIntoString(expr, values); err != nil {
			return nil, fmt.Errorf("parsing --set-string %q: %w", expr, err)
		}
		if err := checkExprKeys("--set-string", expr, strvals.ParseIntoString); err != nil {
			return nil, err
		}
	}
	for _, expr := range src.SetFile {
		reader := func(rs []rune) (any, error) {
			data, err := readFile(string(rs))
			if err != nil {
				return nil, fmt.Errorf("reading file: %w", err)
			}
			return string(data), nil
		}
		if !strings.Contains(expr, "=") {
			return nil, fmt.Errorf("parsing --set-file %q: want key=path", expr)
		}
		if err := strvals.ParseIntoFile(expr, values, reader); err != nil {
			return nil, fmt.Errorf("parsing --set-file %q: %w", expr, err)
		}
		if key, _, _ := strings.Cut(expr, "="); emptySegment(key) {
			return nil, fmt.Errorf("parsing --set-file %q: a key is empty: want key=path", expr)
		}
	}
	return normalize(values), nil
}

// checkExprKeys refuses an expression with an empty key ("=3", "a..b=1",
// "a.=1"): Helm's parser drops it, and the value would be lost without a
// word.
func checkExprKeys(flag, expr string, parse func(string, map[string]any) error) error {
	parsed := map[string]any{}
	if err := parse(expr, parsed); err != nil {
		return fmt.Errorf("parsing %s %q: %w", flag, expr, err)
	}
	key, _, _ := strings.Cut(expr, "=")
	if len(parsed) == 0 || hasEmptyKey(parsed) || emptySegment(key) {
		return fmt.Errorf("parsing %s %q: a key is empty: want key=value, with a key such as controller.replicas", flag, expr)
	}
	return nil
}

// emptySegment reports a dotted key with an empty part: "", "a..b", ".a".
func emptySegment(key string) bool {
	return strings.Contains("."+key+".", "..")
}

func hasEmptyKey(v any) bool {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if k == "" || hasEmptyKey(e) {
				return true
			}
		}
	case []any:
		for _, e := range t {
			if hasEmptyKey(e) {
				return true
			}
		}
	}
	return false
}

// parseValuesYAML decodes one values file with Helm's own YAML semantics
// (sigs.k8s.io/yaml). Every error names the place: "name:line:col: what".
// The decoders Helm and Kubernetes use report a syntax error's line only,
// and not always the right one, so syntax is checked first by a parser that
// knows the position.
func parseValuesYAML(name string, data []byte) (map[string]any, error) {
	if _, err := goccyparser.ParseBytes(data, 0); err != nil {
		var syntax *goccyyaml.SyntaxError
		if errors.As(err, &syntax) && syntax.Token != nil {
			return nil, fmt.Errorf("%s:%d:%d: %s", name, syntax.Token.Position.Line, syntax.Token.Position.Column, syntax.Message)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return map[string]any{}, nil // an empty file sets nothing
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("%s:%d:%d: a values file holds one YAML document, found another", name, extra.Line, extra.Column)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return map[string]any{}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d:%d: values must be a mapping of keys to values, not %s", name, root.Line, root.Column, nodeKind(root))
	}
	if err := checkKeys(name, root); err != nil {
		return nil, err
	}
	values := map[string]any{}
	if err := sigsyaml.Unmarshal(data, &values); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return values, nil
}

// checkKeys rejects what Helm values cannot hold, with the key's position:
// keys that are not strings and keys given twice.
func checkKeys(name string, n *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		seen := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "!!merge") {
				return fmt.Errorf("%s:%d:%d: key %s is not a string", name, k.Line, k.Column, describeNode(k))
			}
			if prev, ok := seen[k.Value]; ok {
				return fmt.Errorf("%s:%d:%d: key %q is already set at line %d", name, k.Line, k.Column, k.Value, prev.Line)
			}
			seen[k.Value] = k
			if err := checkKeys(name, n.Content[i+1]); err != nil {
				return err
			}
		}
	case yaml.SequenceNode, yaml.DocumentNode:
		for _, c := range n.Content {
			if err := checkKeys(name, c); err != nil {
				return err
			}
		}
	}
	return nil
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a mapping"
}

func describeNode(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return fmt.Sprintf("%q (%s)", n.Value, strings.TrimPrefix(n.Tag, "!!"))
	}
	return nodeKind(n)
}

// normalize gives values the types JSON decoding gives (map[string]any,
// []any, float64, string, bool, nil), the types Helm's own values files
// produce, so that comparisons and the schema see one representation.
// Values that do not survive JSON are returned unchanged.
func normalize(v map[string]any) map[string]any {
	out, err := normalizeChecked("", v)
	if err != nil {
		return v
	}
	return out
}

func normalizeChecked(name string, v map[string]any) (map[string]any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: values must be plain data: %w", name, err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// MergeValues returns a deep merge of override onto base, neither of which
// it changes: maps merge key by key, anything else in override replaces what
// base holds, and a null in override removes the key (Helm's rule, so that
// `--set x=null` drops a default).
func MergeValues(base, override map[string]any) map[string]any {
	out := make(map[string]any, len(base))
	for k, v := range base {
		out[k] = deepCopy(v)
	}
	for k, v := range override {
		if v == nil {
			delete(out, k)
			continue
		}
		if om, ok := v.(map[string]any); ok {
			if bm, ok := out[k].(map[string]any); ok {
				out[k] = MergeValues(bm, om)
				continue
			}
		}
		out[k] = deepCopy(v)
	}
	return out
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return MergeValues(v, nil)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// NonDefault returns what values set differently from the chart's defaults,
// without credentials: the smallest map that, merged onto the defaults with
// MergeValues, gives the same values. values may be the user's values alone
// or already merged onto the defaults. Install stores the result so that
// upgrade reproduces the user's choices while picking up new defaults. A
// default the user removed (with null) comes back as null.
func NonDefault(values map[string]any) map[string]any {
	defaults := StripCredentials(Defaults())
	merged := MergeValues(defaults, normalize(StripCredentials(values)))
	return nonDefault(merged, defaults)
}

func nonDefault(values, defaults map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range values {
		d, ok := defaults[k]
		if !ok {
			out[k] = deepCopy(v)
			continue
		}
		vm, vok := v.(map[string]any)
		dm, dok := d.(map[string]any)
		if vok && dok {
			if sub := nonDefault(vm, dm); len(sub) > 0 {
				out[k] = sub
			}
			continue
		}
		if !reflect.DeepEqual(v, d) {
			out[k] = deepCopy(v)
		}
	}
	for k := range defaults {
		if _, ok := values[k]; !ok {
			out[k] = nil
		}
	}
	return out
}

// StripCredentials returns a copy of values without the credential keys.
func StripCredentials(values map[string]any) map[string]any {
	out := MergeValues(values, nil)
	for _, key := range CredentialKeys {
		deletePath(out, key)
	}
	return out
}

// setPath sets a dotted key, creating the maps on the way.
func setPath(values map[string]any, key string, v any) {
	parts := strings.Split(key, ".")
	m := values
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

// deletePath removes a dotted key and the maps it leaves empty.
func deletePath(values map[string]any, key string) {
	parts := strings.SplitN(key, ".", 2)
	if len(parts) == 1 {
		delete(values, key)
		return
	}
	next, ok := values[parts[0]].(map[string]any)
	if !ok {
		return
	}
	deletePath(next, parts[1])
	if len(next) == 0 {
		delete(values, parts[0])
	}
}
