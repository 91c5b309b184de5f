package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/meshctl/mesh/internal/suggest"
)

// Error is every problem found in one configuration document, one per
// line, each as
//
//	proxy.yaml:12:3: limits.conectTimeout: unknown key (did you mean connectTimeout?)
//
// (file:line:column: key path: what is wrong), as meshctl reports values
// files. The line and column are left out where the document's layout
// could not be followed, and the key path where the problem is the
// document's own (its syntax).
type Error struct {
	Source   string
	Problems []Problem
}

// Problem is one thing wrong in a configuration document.
type Problem struct {
	// Path is the key path: "limits.connectTimeout", "services[0].ports[1]",
	// or "" for the document as a whole.
	Path string
	// Line and Column are 1-based; 0 when unknown.
	Line, Column int
	Message      string
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Source)
		if p.Line > 0 {
			b.WriteString(":" + strconv.Itoa(p.Line))
			if p.Column > 0 {
				b.WriteString(":" + strconv.Itoa(p.Column))
			}
		}
		b.WriteString(": ")
		if p.Path != "" {
			b.WriteString(p.Path + ": ")
		}
		b.WriteString(p.Message)
	}
	return b.String()
}

// problem is a Problem before it has a position: atKey says whether it is
// shown at the key (an unknown key) or at the value.
type problem struct {
	path  string
	atKey bool
	line  int // for a syntax problem, the line yaml.v2 gives
	msg   string
}

// problems is what decodeStrict and validate find; Error gives them
// positions.
type problems []problem

func (ps problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.path + ": " + p.msg
		if p.path == "" {
			s[i] = p.msg
		}
	}
	return strings.Join(s, "; ")
}

// newError positions the problems found in the document data from source,
// in the order of the document.
func newError(source string, data []byte, ps []problem) *Error {
	pos := locate(data)
	e := &Error{Source: source}
	for _, p := range ps {
		pr := Problem{Path: p.path, Message: p.msg}
		if at, ok := pos.at(p.path, p.atKey); ok && p.path != "" {
			pr.Line, pr.Column = at.line, at.col
		} else if p.path == "" && p.line > 0 {
			pr.Line = p.line
		}
		e.Problems = append(e.Problems, pr)
	}
	sort.SliceStable(e.Problems, func(i, j int) bool {
		a, b := e.Problems[i], e.Problems[j]
		if (a.Line == 0) != (b.Line == 0) {
			return a.Line != 0
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return e
}

// collect flattens what validate returns (joined fieldErrors) into
// problems.
func collect(err error) []problem {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []problem
		for _, e := range j.Unwrap() {
			out = append(out, collect(e)...)
		}
		return out
	}
	var fe fieldError
	if errors.As(err, &fe) {
		return []problem{{path: fe.path, msg: fe.msg}}
	}
	var ps problems
	if errors.As(err, &ps) {
		return ps
	}
	return []problem{{msg: err.Error()}}
}

// yamlLine matches the "line N: what" of yaml.v2's errors.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// syntaxProblems turns a yaml.v2 error into problems of the document, with
// the line yaml.v2 gives (it gives no column).
func syntaxProblems(err error) problems {
	var out problems
	text := strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if m := yamlLine.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			out = append(out, problem{line: n, msg: m[2]})
			continue
		}
		out = append(out, problem{msg: strings.TrimPrefix(line, "yaml: ")})
	}
	return out
}

// check walks a decoded document (what jsonable returns) against the Go
// type t it will be decoded into, and reports every key t has no field for
// and every value that will not decode, where encoding/json stops at the
// first.
func check(v any, t reflect.Type, path string, out *problems) {
	if v == nil {
		return // null leaves a field as it is
	}
	for t.Kind() == reflect.Pointer && !decodesItself(t) {
		t = t.Elem()
	}
	if decodesItself(t) {
		b, err := json.Marshal(v)
		if err == nil {
			err = json.Unmarshal(b, reflect.New(t).Interface())
		}
		if err != nil {
			*out = append(*out, problem{path: path, msg: valueMessage(err, t, v)})
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			*out = append(*out, problem{path: path, msg: "want a mapping, got " + describe(v)})
			return
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft := fieldType(t, k)
			if ft == nil {
				msg := "unknown key"
				if near := nearestField(t, k); near != "" {
					msg += " (did you mean " + near + "?)"
				}
				*out = append(*out, problem{path: joinKey(path, k), atKey: true, msg: msg})
				continue
			}
			check(m[k], ft, joinKey(path, k), out)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			*out = append(*out, problem{path: path, msg: "want a mapping, got " + describe(v)})
			return
		}
		for k, e := range m {
			check(e, t.Elem(), joinKey(path, k), out)
		}
	case reflect.Slice, reflect.Array:
		s, ok := v.([]any)
		if !ok {
			*out = append(*out, problem{path: path, msg: "want a list, got " + describe(v)})
			return
		}
		for i, e := range s {
			check(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", out)
		}
	default:
		b, err := json.Marshal(v)
		if err == nil {
			err = json.Unmarshal(b, reflect.New(t).Interface())
		}
		if err != nil {
			*out = append(*out, problem{path: path, msg: valueMessage(err, t, v)})
		}
	}
}

func decodesItself(t reflect.Type) bool {
	return t.Implements(jsonUnmarshaler) || t.Implements(textUnmarshaler) ||
		reflect.PointerTo(t).Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)
}

// valueMessage says why v does not decode into t: the type's own words
// when it decodes itself (a Duration), else what was wanted and found.
func valueMessage(err error, t reflect.Type, v any) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) || !decodesItself(t) {
		return "want " + kindWord(t) + ", got " + describe(v)
	}
	if str, ok := v.(string); ok && strings.Contains(err.Error(), strconv.Quote(str)) {
		return err.Error() // it names the value already (time.ParseDuration does)
	}
	return err.Error() + ", got " + describe(v)
}

func kindWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	}
	return t.String()
}

// describe names a decoded value for a message: its kind, and the value
// itself when it is a scalar.
func describe(v any) string {
	switch v := v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case string:
		return fmt.Sprintf("%q", v)
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return fmt.Sprint(v)
}

// nearestField is the JSON name of the field of t closest to key, if one
// is close enough to be the key misspelt (or in the wrong case).
func nearestField(t reflect.Type, key string) string {
	return suggest.Nearest(key, maps.Keys(maps.Collect(jsonFields(t))), 2)
}
