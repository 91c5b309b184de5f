package inject

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// The injector writes what it adds from a small ordered value model, so that
// the new lines follow the document's own style (block or flow, indentation,
// line endings) and the order of keys is fixed and reviewable in golden files.
// A value is a string, an int, a bool, an object or a list.
type (
	field struct {
		key string
		val any
	}
	object []field
	list   []any
	// singleQuoted is a string written 'like this' in block style, for
	// values such as JSON that would need escaping inside double quotes.
	singleQuoted string
)

// MarshalJSON keeps the order of the fields.
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteByte(':')
		v, err := marshalFlow(f.val)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshalFlow encodes v as JSON, which is also valid flow YAML.
func marshalFlow(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func flowText(v any) string {
	b, err := marshalFlow(v)
	if err != nil {
		// The model holds only strings, ints, bools, objects and lists.
		panic("inject: encoding an added value: " + err.Error())
	}
	return string(b)
}

// blockStyle is how a document writes block collections.
type blockStyle struct {
	eol string
	// step is the indentation of a nested mapping relative to its key.
	step int
	// indentSeq is true when a sequence under a key is indented ("key:\n  - a")
	// rather than flush with it ("key:\n- a").
	indentSeq bool
	// gap is the distance from a sequence item's dash to its content.
	gap int
}

func (s blockStyle) indent(w *strings.Builder, col int) {
	for i := 0; i < col; i++ {
		w.WriteByte(' ')
	}
}

// entry writes "key: value" for a mapping whose keys sit at col. The first
// line carries no indentation (the caller is already there) and the text ends
// without a line break.
func (s blockStyle) entry(w *strings.Builder, key string, v any, col int) {
	w.WriteString(scalarText(key))
	w.WriteByte(':')
	switch v := v.(type) {
	case object:
		if len(v) == 0 {
			w.WriteString(" {}")
			return
		}
		for _, f := range v {
			w.WriteString(s.eol)
			s.indent(w, col+s.step)
			s.entry(w, f.key, f.val, col+s.step)
		}
	case list:
		if len(v) == 0 {
			w.WriteString(" []")
			return
		}
		dash := col
		if s.indentSeq {
			dash += s.step
		}
		for _, it := range v {
			w.WriteString(s.eol)
			s.indent(w, dash)
			s.item(w, it, dash)
		}
	default:
		w.WriteByte(' ')
		w.WriteString(scalarText(v))
	}
}

// item writes "- value" for a sequence whose dashes sit at col, without
// leading indentation or trailing line break.
func (s blockStyle) item(w *strings.Builder, v any, col int) {
	w.WriteByte('-')
	s.indent(w, s.gap-1)
	content := col + s.gap
	switch v := v.(type) {
	case object:
		if len(v) == 0 {
			w.WriteString("{}")
			return
		}
		for i, f := range v {
			if i > 0 {
				w.WriteString(s.eol)
				s.indent(w, content)
			}
			s.entry(w, f.key, f.val, content)
		}
	case list:
		w.WriteString(flowText(v))
	default:
		w.WriteString(scalarText(v))
	}
}

// scalarText writes a scalar plainly when YAML reads it back as the same
// string, and double-quoted (JSON) otherwise.
func scalarText(v any) string {
	switch v := v.(type) {
	case singleQuoted:
		return "'" + strings.ReplaceAll(string(v), "'", "''") + "'"
	case string:
		if plainSafe(v) {
			return v
		}
		return flowText(v)
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case bool:
		return strconv.FormatBool(v)
	}
	return flowText(v)
}

// plainSafe is deliberately conservative: anything it does not recognise is
// quoted, which is always correct.
func plainSafe(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '/' || c == '.' || c == '_' || c == '=' || c == '@' && i > 0:
		case c == '-' && (i > 0 || len(s) > 1 && s[1] != ' '):
		case c == ':' && i > 0 && i+1 < len(s) && s[i+1] != ' ':
		default:
			return false
		}
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", ".inf", "-.inf", ".nan":
		return false
	}
	if numeric(s) {
		return false
	}
	// Sexagesimal and date-like values are read as numbers or timestamps by
	// some YAML 1.1 readers.
	if strings.ContainsAny(s[:1], "0123456789") && strings.ContainsAny(s, ":-") {
		return false
	}
	return true
}

// numeric reports whether s could be read as a number. Only strings that
// start like one are parsed, because parsing is the costly part of emitting.
func numeric(s string) bool {
	c := s[0]
	if c == '+' || c == '-' || c == '.' {
		if len(s) == 1 {
			return false
		}
		c = s[1]
	}
	if (c < '0' || c > '9') && c != '.' {
		return false
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return true
	}
	_, err := strconv.ParseInt(s, 0, 64)
	return err == nil
}
