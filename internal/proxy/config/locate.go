package config

// Why this exists: errors must say where in the file a problem is
// (file:line:column), and yaml.v2, the one YAML library the sidecar links,
// keeps no positions (yaml.v3 does, but linking it beside v2 would grow
// every pod, and replacing v2 would change how files read). So the
// positions come from this small reader of the YAML structure: block and
// flow mappings and sequences, quoted and plain scalars, block scalars and
// comments, which is what a configuration file (or a JSON one) holds. It
// gives positions only; the values are still yaml.v2's. On anything it does
// not follow (anchors, aliases, tags, merge keys, complex keys) it gives up
// and the errors carry the key path alone. FuzzLocateMatchesYAMLv3 holds
// its positions to yaml.v3's.

import (
	"strconv"
	"unicode/utf8"
)

// position is a 1-based line and column (in characters).
type position struct{ line, col int }

// positions maps key paths ("limits.connectTimeout", "services[0].ports")
// to where their key and their value start in a document. The root's value
// is at path "".
type positions struct {
	keys, values map[string]position
}

// locate reads the structure of the YAML (or JSON) document src. It
// returns nil when it cannot follow the document.
func locate(src []byte) *positions {
	l := &locator{src: src, line: 1, col: 1, pos: &positions{keys: map[string]position{}, values: map[string]position{}}}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(giveUp); !ok {
				panic(r)
			}
			l.pos = nil
		}
	}()
	l.skipSpace(true)
	if l.hasPrefix("---") && l.isBlankAt(l.i+3) {
		l.advance(3)
		l.skipSpace(true)
	}
	if l.i < len(l.src) && !l.hasPrefix("...") {
		l.node("", 0)
	}
	l.skipSpace(true)
	if l.i < len(l.src) && !l.hasPrefix("...") && !l.hasPrefix("---") {
		l.fail()
	}
	return l.pos
}

type giveUp struct{}

type locator struct {
	src       []byte
	i         int
	line, col int
	pos       *positions
}

func (l *locator) fail() { panic(giveUp{}) }

func (l *locator) here() position { return position{l.line, l.col} }

func (l *locator) peek(off int) byte {
	if l.i+off < len(l.src) {
		return l.src[l.i+off]
	}
	return 0
}

func (l *locator) hasPrefix(s string) bool {
	return len(l.src)-l.i >= len(s) && string(l.src[l.i:l.i+len(s)]) == s
}

// isBlankAt: outside the input, a space, a tab or a line break at i.
func (l *locator) isBlankAt(i int) bool {
	return i < 0 || i >= len(l.src) || l.src[i] == ' ' || l.src[i] == '\t' || l.src[i] == '\n' || l.src[i] == '\r'
}

func (l *locator) advance(n int) {
	for ; n > 0 && l.i < len(l.src); n-- {
		c := l.src[l.i]
		l.i++
		switch {
		case c == '\n':
			l.line++
			l.col = 1
		case c == '\r':
			if l.i < len(l.src) && l.src[l.i] == '\n' {
				continue // the \n ends the line
			}
			l.line++
			l.col = 1
		case c < utf8.RuneSelf || c >= 0xC0:
			l.col++ // one per character, not per byte
		}
	}
}

// skipSpace skips spaces, tabs and comments, and line breaks too when
// lines is set. A comment starts at a # after a blank or a line start.
func (l *locator) skipSpace(lines bool) {
	for l.i < len(l.src) {
		switch c := l.src[l.i]; {
		case c == ' ' || c == '\t':
			l.advance(1)
		case c == '#' && (l.i == 0 || l.isBlankAt(l.i-1)):
			for l.i < len(l.src) && l.src[l.i] != '\n' && l.src[l.i] != '\r' {
				l.advance(1)
			}
		case (c == '\n' || c == '\r') && lines:
			l.advance(1)
		case c == 0xEF && l.i == 0 && l.hasPrefix("\uFEFF"):
			l.i += 3
		default:
			return
		}
	}
}

// node reads the value at the current position, of path, in a block whose
// parent starts at column parent.
func (l *locator) node(path string, parent int) {
	l.pos.values[path] = l.here()
	switch c := l.peek(0); {
	case c == '{' || c == '[':
		l.flow(path)
		l.endOfLine()
	case c == '-' && l.isBlankAt(l.i+1):
		l.blockSequence(path)
	case c == '|' || c == '>':
		l.blockScalar(parent)
	case c == '&' || c == '*' || c == '!' || c == '?' || c == '%' || c == '@' || c == '`':
		l.fail()
	default:
		start, startIdx := l.here(), l.i
		l.scalar(false)
		end := l.i
		l.skipSpace(false)
		if l.peek(0) == ':' && l.isBlankAt(l.i+1) {
			// A block mapping whose first key was just read.
			key := keyText(l.src[startIdx:end])
			l.blockMapping(path, start, key)
			return
		}
		l.continuation(parent)
	}
}

// continuation skips the further lines of a multi-line plain scalar: those
// indented past its parent.
func (l *locator) continuation(parent int) {
	for {
		l.endOfLine()
		save := *l
		l.skipSpace(true)
		if l.i >= len(l.src) || l.col <= parent {
			*l = save
			return
		}
		for l.i < len(l.src) && l.src[l.i] != '\n' && l.src[l.i] != '\r' {
			if l.src[l.i] == '#' && l.isBlankAt(l.i-1) {
				break
			}
			l.advance(1)
		}
	}
}

// endOfLine requires that nothing but a comment is left on the line.
func (l *locator) endOfLine() {
	l.skipSpace(false)
	if l.i < len(l.src) && l.src[l.i] != '\n' && l.src[l.i] != '\r' {
		l.fail()
	}
}

// nextLine moves to the first character of the next line with content and
// returns its column, or 0 at the end of the input.
func (l *locator) nextLine() int {
	l.skipSpace(true)
	if l.i >= len(l.src) || l.hasPrefix("---") && l.col == 1 || l.hasPrefix("...") && l.col == 1 {
		return 0
	}
	return l.col
}

// blockMapping reads a block mapping at column start.col whose first key,
// key, has been read up to its colon.
func (l *locator) blockMapping(path string, start position, key string) {
	col := start.col
	for {
		if key == "<<" {
			l.fail() // a merge key: its keys belong to another place
		}
		kp := l.key(path, key, start)
		l.advance(1) // the colon
		l.skipSpace(false)
		if l.i < len(l.src) && l.src[l.i] != '\n' && l.src[l.i] != '\r' {
			l.node(kp, col)
		} else {
			save := *l
			next := l.nextLine()
			switch {
			case next > col, next == col && l.peek(0) == '-' && l.isBlankAt(l.i+1):
				l.node(kp, col)
			default:
				*l = save // an empty value
			}
		}
		save := *l
		next := l.nextLine()
		if next < col || next == 0 {
			*l = save
			return
		}
		if next > col {
			l.fail()
		}
		start = l.here()
		startIdx := l.i
		if c := l.peek(0); c == '-' && l.isBlankAt(l.i+1) || c == '{' || c == '[' || c == '?' {
			l.fail()
		}
		l.scalar(false)
		end := l.i
		l.skipSpace(false)
		if !(l.peek(0) == ':' && l.isBlankAt(l.i+1)) {
			l.fail()
		}
		key = keyText(l.src[startIdx:end])
	}
}

// blockSequence reads a block sequence whose first dash is here.
func (l *locator) blockSequence(path string) {
	col := l.col
	for n := 0; ; n++ {
		ip := path + "[" + strconv.Itoa(n) + "]"
		l.advance(1) // the dash
		l.skipSpace(false)
		if l.i < len(l.src) && l.src[l.i] != '\n' && l.src[l.i] != '\r' {
			l.node(ip, col)
		} else {
			save := *l
			if next := l.nextLine(); next > col {
				l.node(ip, col)
			} else {
				*l = save // a null entry
			}
		}
		save := *l
		next := l.nextLine()
		if next < col || next == 0 || next == col && !(l.peek(0) == '-' && l.isBlankAt(l.i+1)) {
			*l = save
			return
		}
		if next > col {
			l.fail()
		}
	}
}

// blockScalar skips a literal or folded scalar: its header, then the lines
// indented past the parent (or blank).
func (l *locator) blockScalar(parent int) {
	l.advance(1)
	for l.i < len(l.src) && (l.peek(0) == '+' || l.peek(0) == '-' || l.peek(0) >= '1' && l.peek(0) <= '9') {
		l.advance(1)
	}
	l.endOfLine()
	for l.i < len(l.src) {
		save := *l
		l.advance(1) // the line break
		for l.i < len(l.src) && l.src[l.i] == ' ' {
			l.advance(1)
		}
		if l.i < len(l.src) && l.src[l.i] != '\n' && l.src[l.i] != '\r' && l.col <= parent {
			*l = save
			return
		}
		for l.i < len(l.src) && l.src[l.i] != '\n' && l.src[l.i] != '\r' {
			l.advance(1)
		}
	}
}

// flow reads a flow mapping or sequence (JSON is one).
func (l *locator) flow(path string) {
	open := l.src[l.i]
	closing := byte('}')
	if open == '[' {
		closing = ']'
	}
	l.advance(1)
	for n := 0; ; n++ {
		l.skipSpace(true)
		if l.peek(0) == closing {
			l.advance(1)
			return
		}
		if open == '[' {
			ip := path + "[" + strconv.Itoa(n) + "]"
			l.flowNode(ip)
			if l.peek(0) == ':' {
				l.fail() // a single-pair mapping in a sequence
			}
		} else {
			start, startIdx := l.here(), l.i
			if c := l.peek(0); c == '{' || c == '[' || c == '?' {
				l.fail()
			}
			l.scalar(true)
			key := keyText(l.src[startIdx:l.i])
			if key == "<<" {
				l.fail()
			}
			kp := l.key(path, key, start)
			l.skipSpace(true)
			if l.peek(0) == ':' {
				l.advance(1)
				l.skipSpace(true)
				if c := l.peek(0); c != ',' && c != '}' {
					l.flowNode(kp)
				}
			}
		}
		l.skipSpace(true)
		switch l.peek(0) {
		case ',':
			l.advance(1)
		case closing:
		default:
			l.fail()
		}
	}
}

func (l *locator) flowNode(path string) {
	l.pos.values[path] = l.here()
	switch c := l.peek(0); {
	case c == '{' || c == '[':
		l.flow(path)
	case c == '&' || c == '*' || c == '!' || c == '?' || c == '|' || c == '>' || c == 0:
		l.fail()
	default:
		l.scalar(true)
	}
	l.skipSpace(true)
}

// scalar skips a quoted or plain scalar. A plain one ends at ": ", " #"
// or the line's end, and in flow context also at , [ ] { }.
func (l *locator) scalar(inFlow bool) {
	switch c := l.peek(0); c {
	case '"':
		l.advance(1)
		for l.i < len(l.src) && l.src[l.i] != '"' {
			if l.src[l.i] == '\\' {
				l.advance(1)
			}
			l.advance(1)
		}
		if l.i >= len(l.src) {
			l.fail()
		}
		l.advance(1)
		return
	case '\'':
		l.advance(1)
		for {
			if l.i >= len(l.src) {
				l.fail()
			}
			if l.src[l.i] == '\'' {
				if l.peek(1) == '\'' {
					l.advance(2)
					continue
				}
				l.advance(1)
				return
			}
			l.advance(1)
		}
	}
	begin := l.i
	for l.i < len(l.src) {
		c := l.src[l.i]
		if c == '\n' || c == '\r' ||
			c == ':' && l.isBlankAt(l.i+1) ||
			c == '#' && l.i > begin && l.isBlankAt(l.i-1) ||
			inFlow && (c == ',' || c == '[' || c == ']' || c == '{' || c == '}') {
			break
		}
		l.advance(1)
	}
	// Trailing blanks belong to no scalar.
	for l.i > begin && (l.src[l.i-1] == ' ' || l.src[l.i-1] == '\t') {
		l.i--
		l.col--
	}
	if l.i == begin {
		l.fail()
	}
}

// keyText is the text of a key as written: quoted keys unquoted (with
// escapes, which config keys never need, giving up on the match only).
func keyText(b []byte) string {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
		return s
	}
	if len(s) >= 2 && s[0] == '\'' {
		out := make([]byte, 0, len(s))
		for i := 1; i < len(s)-1; i++ {
			out = append(out, s[i])
			if s[i] == '\'' {
				i++
			}
		}
		return string(out)
	}
	return s
}

// key records the position of a key and returns its path. A key given
// twice is an error yaml.v2 reports itself; which one a path means is
// then unclear, so locate gives up.
func (l *locator) key(path, key string, at position) string {
	kp := joinKey(path, key)
	if _, dup := l.pos.keys[kp]; dup || key == "" {
		l.fail()
	}
	l.pos.keys[kp] = at
	return kp
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// at returns where the problem at path is best shown: its value for a
// value's problem, its key for a key's, else the nearest enclosing value
// the document has (a required key that is missing is shown at its parent),
// short of the document itself.
func (p *positions) at(path string, key bool) (position, bool) {
	if p == nil {
		return position{}, false
	}
	if key {
		if pos, ok := p.keys[path]; ok {
			return pos, true
		}
	}
	for path != "" { // the document's start says nothing
		if pos, ok := p.values[path]; ok {
			return pos, true
		}
		if pos, ok := p.keys[path]; ok {
			return pos, true
		}
		path = parentPath(path)
	}
	return position{}, false
}

// parentPath strips the last key or index of a path.
func parentPath(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		switch path[i] {
		case '.':
			return path[:i]
		case '[':
			if i > 0 {
				return path[:i]
			}
			return ""
		}
	}
	return ""
}
