package inject

import (
	"bytes"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// source is one document's bytes with the index that turns the parser's
// positions (line, and column counted in characters) into byte offsets.
type source struct {
	b     []byte
	lines []int // byte offset of the start of each line
	// firstLine is the line of the stream on which b starts, for messages.
	firstLine int
}

func newSource(b []byte, firstLine int) *source {
	return &source{b: b, firstLine: firstLine}
}

// index builds the line index on first use: most documents of a large
// stream are never edited, and the index of all of them at once would cost
// memory in proportion to the stream.
func (s *source) index() {
	if s.lines != nil {
		return
	}
	s.lines = make([]int, 1, bytes.Count(s.b, []byte{'\n'})+1)
	// Line breaks are counted as the parser counts them: LF and CRLF; the
	// lone CR and the Unicode breaks are refused before they get here.
	for i, c := range s.b {
		if c == '\n' {
			s.lines = append(s.lines, i+1)
		}
	}
}

// offset returns the byte offset of a parser position, or -1 when the
// position is outside the document.
func (s *source) offset(line, col int) int {
	s.index()
	if line < 1 || line > len(s.lines) || col < 1 {
		return -1
	}
	off := s.lines[line-1]
	for c := 1; c < col; c++ {
		if off >= len(s.b) || s.b[off] == '\n' {
			return -1
		}
		if s.b[off] < utf8.RuneSelf {
			off++
			continue
		}
		_, w := utf8.DecodeRune(s.b[off:])
		off += w
	}
	return off
}

// at returns the byte offset of n.
func (s *source) at(n *yaml.Node) int { return s.offset(n.Line, n.Column) }

// lineStart returns the offset of the start of the line holding off.
func (s *source) lineStart(off int) int {
	i := bytes.LastIndexByte(s.b[:off], '\n')
	return i + 1
}

// column returns the 0-based column, in bytes, of off on its line.
func (s *source) column(off int) int { return off - s.lineStart(off) }

// blankBefore reports whether only spaces precede off on its line.
func (s *source) blankBefore(off int) bool {
	for i := off - 1; i >= 0 && s.b[i] != '\n'; i-- {
		if s.b[i] != ' ' && s.b[i] != '\t' {
			return false
		}
	}
	return true
}

// eol returns the line ending used at off: CRLF when the line holding off
// ends with one, else the document's first line ending, else LF.
func (s *source) eol(off int) string {
	if i := bytes.IndexByte(s.b[off:], '\n'); i >= 0 {
		if i > 0 && s.b[off+i-1] == '\r' {
			return "\r\n"
		}
		return "\n"
	}
	if i := bytes.IndexByte(s.b, '\n'); i > 0 && s.b[i-1] == '\r' {
		return "\r\n"
	}
	return "\n"
}

// flowEnd returns the offset of the bracket that closes the flow collection
// opening at off, skipping quoted scalars and comments; -1 if there is none.
func (s *source) flowEnd(off int) int {
	depth := 0
	b := s.b
	for i := off; i < len(b); i++ {
		switch b[i] {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return i
			}
		case '"':
			if !quoteCanStart(b, i) {
				continue
			}
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '\'':
			if !quoteCanStart(b, i) {
				continue
			}
			for i++; i < len(b); i++ {
				if b[i] == '\'' {
					if i+1 < len(b) && b[i+1] == '\'' {
						i++
						continue
					}
					break
				}
			}
		case '#':
			if i > 0 && (b[i-1] == ' ' || b[i-1] == '\t' || b[i-1] == '\n') {
				for i < len(b) && b[i] != '\n' {
					i++
				}
			}
		}
	}
	return -1
}

// quoteCanStart reports whether a quote at i opens a quoted scalar rather
// than sitting inside a plain one ("don't").
func quoteCanStart(b []byte, i int) bool {
	if i == 0 {
		return true
	}
	switch b[i-1] {
	case ' ', '\t', '\n', '\r', '[', '{', ',', ':':
		return true
	}
	return false
}
