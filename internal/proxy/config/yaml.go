package config

// The sidecar used to read its file with sigs.k8s.io/yaml; this is the part
// of it the proxy needs, so that the proxy links nothing from sigs.k8s.io or
// k8s.io (cmd/meshproxy's dependency test). The semantics are the same, held
// to them by FuzzDecodeStrictMatchesSigsYAML: the YAML (1.1, as go.yaml.in/yaml/v2
// reads it; duplicate keys are errors) becomes JSON, which encoding/json
// decodes through the structs' json tags with unknown fields refused. On the
// way, a number or boolean bound for a string field becomes that string
// (`version: 1` is version "1"), as Kubernetes manifests behave.

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"iter"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v2"
)

// decodeStrict decodes the YAML or JSON document data into out, a pointer.
// Its error is problems: yaml.v2's syntax errors with their lines, or every
// unknown key and every value that does not decode, each with its key
// path (encoding/json would stop at the first, without a path). Parse
// names the file and finds the positions.
func decodeStrict(data []byte, out any) error {
	var doc any
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		return syntaxProblems(err)
	}
	j, err := jsonable(doc, reflect.TypeOf(out))
	if err != nil {
		return problems{{msg: err.Error()}}
	}
	var ps problems
	check(j, reflect.TypeOf(out), "", &ps)
	if len(ps) > 0 {
		return ps
	}
	b, err := json.Marshal(j)
	if err != nil {
		return problems{{msg: err.Error()}}
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(out); err != nil {
		return problems{{msg: err.Error()}} // what check missed: a bug, but still refused
	}
	return nil
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// jsonable turns what yaml.v2 decoded into values encoding/json can write:
// map keys become strings, and scalars bound for a string field (t, the Go
// type the value will be decoded into; nil when unknown) become strings.
func jsonable(v any, t reflect.Type) (any, error) {
	t = target(t)
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			key, err := keyString(k)
			if err != nil {
				return nil, err
			}
			var et reflect.Type
			if t != nil {
				switch t.Kind() {
				case reflect.Struct:
					et = fieldType(t, key)
				case reflect.Map:
					et = t.Elem()
				}
			}
			if m[key], err = jsonable(e, et); err != nil {
				return nil, err
			}
		}
		return m, nil
	case []any:
		var et reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			et = t.Elem()
		}
		s := make([]any, len(v))
		for i, e := range v {
			var err error
			if s[i], err = jsonable(e, et); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
	if t == nil || t.Kind() != reflect.String {
		return v, nil
	}
	switch v := v.(type) {
	case int:
		return strconv.Itoa(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case uint64:
		return strconv.FormatUint(v, 10), nil
	case float64:
		// 32 bits, as sigs.k8s.io/yaml writes them: 1.10 is "1.1".
		return strconv.FormatFloat(v, 'g', -1, 32), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return v, nil
}

// target is the type a JSON value bound for t really fills: pointers are
// followed, and a type that decodes itself (Duration) has no known shape.
func target(t reflect.Type) reflect.Type {
	for t != nil {
		if t.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) ||
			reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler) {
			return nil
		}
		if t.Kind() != reflect.Pointer {
			return t
		}
		t = t.Elem()
	}
	return nil
}

// jsonFields yields the fields of struct t that encoding/json fills, by
// their JSON names.
func jsonFields(t reflect.Type) iter.Seq2[string, reflect.Type] {
	return func(yield func(string, reflect.Type) bool) {
		for _, f := range reflect.VisibleFields(t) {
			if !f.IsExported() || f.Anonymous {
				continue
			}
			name := f.Name
			if tag, ok := f.Tag.Lookup("json"); ok {
				if tag == "-" {
					continue
				}
				if n, _, _ := strings.Cut(tag, ","); n != "" {
					name = n
				}
			}
			if !yield(name, f.Type) {
				return
			}
		}
	}
}

// fieldType is the type of the field of struct t that encoding/json fills
// from key: an exact match of its JSON name first, else a case-insensitive
// one.
func fieldType(t reflect.Type, key string) reflect.Type {
	var folded reflect.Type
	for name, ft := range jsonFields(t) {
		if name == key {
			return ft
		}
		if folded == nil && bytes.EqualFold([]byte(name), []byte(key)) {
			folded = ft
		}
	}
	return folded
}

// keyString writes a YAML map key as a JSON object key; yaml.v2 gives keys
// as strings, ints, floats or booleans.
func keyString(k any) (string, error) {
	switch k := k.(type) {
	case string:
		return k, nil
	case int:
		return strconv.Itoa(k), nil
	case int64:
		return strconv.FormatInt(k, 10), nil
	case uint64:
		return strconv.FormatUint(k, 10), nil
	case float64:
		switch s := strconv.FormatFloat(k, 'g', -1, 32); s {
		case "+Inf":
			return ".inf", nil
		case "-Inf":
			return "-.inf", nil
		case "NaN":
			return ".nan", nil
		default:
			return s, nil
		}
	case bool:
		return strconv.FormatBool(k), nil
	}
	return "", fmt.Errorf("unsupported map key of type %T: %v", k, k)
}
