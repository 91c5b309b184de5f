package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"gopkg.in/yaml.v3"
)

// The splicer edits text only where the parser's positions make the edit
// certain, and refuses with an *errFormatting elsewhere. Such a refusal is
// not the user's problem: the document is then rewritten in the plainest
// layout (block YAML indented by two, or JSON indented by two, keeping key
// order, comments and scalar styles) and edited there, where the splice
// always applies. That document's formatting changes; its meaning does not,
// and injection stays idempotent and reversible on the result.

// isFormatting reports whether err is the splicer's refusal of a layout.
func isFormatting(err error) bool {
	var f *errFormatting
	return errors.As(err, &f)
}

// normalized returns d rewritten in the plainest layout, with its document
// marker if it had one.
func (d document) normalized() (document, error) {
	root, err := d.parseYAML()
	if err != nil || root == nil {
		return d, fmt.Errorf("rewriting the document: %v", err)
	}
	var b []byte
	if isJSON(d.b) {
		var w bytes.Buffer
		if err := writeJSON(&w, root); err != nil {
			return d, fmt.Errorf("rewriting the document: %w", err)
		}
		var ind bytes.Buffer
		if err := json.Indent(&ind, w.Bytes(), "", "  "); err != nil {
			return d, fmt.Errorf("rewriting the document: %w", err)
		}
		b = append(ind.Bytes(), '\n')
	} else {
		blockStyled(root)
		var w bytes.Buffer
		enc := yaml.NewEncoder(&w)
		enc.SetIndent(2)
		if err := enc.Encode(root); err != nil {
			return d, fmt.Errorf("rewriting the document: %w", err)
		}
		if err := enc.Close(); err != nil {
			return d, fmt.Errorf("rewriting the document: %w", err)
		}
		b = w.Bytes()
		if isMarker(bytes.TrimLeft(d.b, " \t\r\n")) {
			b = append([]byte("---\n"), b...)
		}
	}
	if bytes.Contains(d.b, []byte("\r\n")) {
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	}
	return document{source: newSource(b, d.firstLine), index: d.index}, nil
}

// isJSON reports whether a document is written as JSON: its content starts
// with a brace or a bracket.
func isJSON(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

// blockStyled clears the flow style of every collection, so that the
// encoder writes block YAML.
func blockStyled(n *yaml.Node) {
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		n.Style &^= yaml.FlowStyle
	}
	for _, c := range n.Content {
		blockStyled(c)
	}
}

// writeJSON writes n as compact JSON, keys in their order.
func writeJSON(w *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		w.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				w.WriteByte(',')
			}
			k, _ := json.Marshal(n.Content[i].Value)
			w.Write(k)
			w.WriteByte(':')
			if err := writeJSON(w, n.Content[i+1]); err != nil {
				return err
			}
		}
		w.WriteByte('}')
	case yaml.SequenceNode:
		w.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := writeJSON(w, c); err != nil {
				return err
			}
		}
		w.WriteByte(']')
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			w.WriteString("null")
		case "!!bool":
			b, err := strconv.ParseBool(n.Value)
			if err != nil {
				return err
			}
			w.WriteString(strconv.FormatBool(b))
		case "!!int", "!!float":
			if json.Valid([]byte(n.Value)) {
				w.WriteString(n.Value)
				break
			}
			fallthrough
		default:
			s, _ := json.Marshal(n.Value)
			w.Write(s)
		}
	case yaml.AliasNode:
		return writeJSON(w, n.Alias)
	default:
		return fmt.Errorf("a YAML node of kind %d in a JSON document", n.Kind)
	}
	return nil
}
