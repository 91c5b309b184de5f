package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// Operation is one RFC 6902 JSON Patch operation: add, remove or replace.
type Operation struct {
	Op    string
	Path  string
	Value any // for add and replace; nil is JSON null
}

// MarshalJSON writes the value of add and replace even when it is null,
// which a plain omitempty would drop, and never writes one for remove.
func (o Operation) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{o.Op, o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// Diff returns the JSON Patch that turns the JSON document from into to.
// Objects are compared key by key, so the patch touches only the members
// that changed; an array that changed is replaced whole, which is what the
// API server applies most simply and what keeps the patch independent of
// element order. Numbers are kept as written, so no precision is lost on
// the way. Both documents must be JSON objects.
func Diff(from, to []byte) ([]Operation, error) {
	a, err := decode(from)
	if err != nil {
		return nil, fmt.Errorf("decoding the original document: %w", err)
	}
	b, err := decode(to)
	if err != nil {
		return nil, fmt.Errorf("decoding the changed document: %w", err)
	}
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if !aok || !bok {
		return nil, fmt.Errorf("diffing documents: both must be JSON objects")
	}
	var ops []Operation
	diffObjects("", am, bm, &ops)
	return ops, nil
}

func decode(doc []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("trailing data after the document")
	}
	return v, nil
}

func diffObjects(path string, a, b map[string]any, ops *[]Operation) {
	for _, k := range sortedKeys(a) {
		if _, ok := b[k]; !ok {
			*ops = append(*ops, Operation{Op: "remove", Path: path + "/" + escape(k)})
		}
	}
	for _, k := range sortedKeys(b) {
		p := path + "/" + escape(k)
		av, ok := a[k]
		if !ok {
			*ops = append(*ops, Operation{Op: "add", Path: p, Value: b[k]})
			continue
		}
		am, aok := av.(map[string]any)
		bm, bok := b[k].(map[string]any)
		switch {
		case aok && bok:
			diffObjects(p, am, bm, ops)
		case !reflect.DeepEqual(av, b[k]):
			*ops = append(*ops, Operation{Op: "replace", Path: p, Value: b[k]})
		}
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// escape makes a member name a JSON Pointer reference token (RFC 6901):
// annotation keys such as meshctl.dev/injected contain a slash.
func escape(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}
