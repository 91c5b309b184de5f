package inject

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
)

var errEOF = io.EOF

// splitDocuments cuts a stream before each line that starts with the
// document marker "---". YAML forbids such a line inside any content, so the
// cut never falls inside a scalar; each piece keeps its own marker, comments
// and trailing text, and the pieces concatenate to the input.
func splitDocuments(in []byte) ([]document, error) {
	if err := checkLineBreaks(in); err != nil {
		return nil, err
	}
	var docs []document
	start, line, startLine := 0, 1, 1
	index := 0
	add := func(end int) {
		b := in[start:end]
		if len(b) == 0 {
			return
		}
		// Text before the first marker is a document only if it holds
		// more than comments and directives.
		if start > 0 || hasContent(b) {
			index++
		}
		docs = append(docs, document{source: newSource(b, startLine), index: max(index, 1)})
	}
	for i := 0; i < len(in); {
		if isMarker(in[i:]) && i > 0 {
			add(i)
			start, startLine = i, line
		}
		nl := bytes.IndexByte(in[i:], '\n')
		if nl < 0 {
			break
		}
		i += nl + 1
		line++
	}
	add(len(in))
	return docs, nil
}

func isMarker(b []byte) bool {
	if len(b) < 3 || b[0] != '-' || b[1] != '-' || b[2] != '-' {
		return false
	}
	return len(b) == 3 || b[3] == ' ' || b[3] == '\t' || b[3] == '\n' || b[3] == '\r'
}

// hasContent reports whether b holds anything but blank lines, comments,
// directives and a document marker without content.
func hasContent(b []byte) bool {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' || t[0] == '%' {
			continue
		}
		if isMarker(t) {
			rest := bytes.TrimSpace(t[3:])
			if len(rest) == 0 || rest[0] == '#' {
				continue
			}
		}
		return true
	}
	return false
}

// checkLineBreaks refuses the line breaks that the parser counts as lines
// but that a line-by-line editor would not: a lone CR and the Unicode
// NEL, LS and PS.
func checkLineBreaks(in []byte) error {
	for i := bytes.IndexByte(in, '\r'); i >= 0; {
		if i+1 >= len(in) || in[i+1] != '\n' {
			return &Error{Document: 1, Line: bytes.Count(in[:i], []byte{'\n'}) + 1, Err: errors.New("a carriage return without a line feed: only LF and CRLF line endings are supported")}
		}
		j := bytes.IndexByte(in[i+1:], '\r')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	for _, br := range []string{"\u0085", "\u2028", "\u2029"} {
		if i := bytes.Index(in, []byte(br)); i >= 0 {
			return &Error{Document: 1, Line: bytes.Count(in[:i], []byte{'\n'}) + 1, Err: fmt.Errorf("the Unicode line break %q is not supported", br)}
		}
	}
	return nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// shiftLines rewrites the parser's document-relative line numbers in err to
// lines of the stream.
func shiftLines(err error, by int) error {
	if by == 0 {
		return err
	}
	msg := yamlLine.ReplaceAllStringFunc(err.Error(), func(m string) string {
		n, _ := strconv.Atoi(m[5:])
		return "line " + strconv.Itoa(n+by)
	})
	return errors.New(msg)
}
