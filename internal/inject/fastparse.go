package inject

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/meshctl/mesh/internal/wellknown"
)

// fastParse builds, for the block YAML that Kubernetes manifests are almost
// always written in, the same node tree that yaml.v3 builds (kinds, values,
// styles, positions, null tags), several times faster. It accepts only a
// strict subset of YAML that it checks completely: indentation by spaces,
// block mappings and sequences, single-line plain and quoted scalars,
// single-line flow collections, and literal or folded block scalars whose
// value injection never reads. Anything else (anchors, aliases, tags,
// multi-line scalars or flow collections, escapes, duplicate keys, document
// end markers, tabs) makes it decline, and yaml.v3 parses the document. The
// fuzz target FuzzFastParse holds it to yaml.v3's trees.
//
// The root of a document of comments only is declined too.
func fastParse(b []byte) (*yaml.Node, bool) {
	p := fastParser{b: b}
	if !p.splitLines() {
		return nil, false
	}
	p.skip()
	if p.i >= len(p.lines) {
		return nil, false
	}
	l := p.lines[p.i]
	var root *yaml.Node
	var ok bool
	if p.isItem(l.start + l.indent) {
		root, ok = p.sequence(l.indent)
	} else {
		root, ok = p.mapping(l.indent, l.start+l.indent)
	}
	if !ok {
		return nil, false
	}
	p.skip()
	if p.i < len(p.lines) {
		return nil, false
	}
	return root, true
}

type fastLine struct {
	start, end int // content of the line, without its line break
	indent     int
}

type fastParser struct {
	b     []byte
	lines []fastLine
	// slab hands out nodes from a few large allocations instead of one
	// allocation per node, which was most of the parser's cost.
	slab []yaml.Node
	// first is the index of the first line: 1, or 2 after a "---" line.
	first int
	i     int
}

func (p *fastParser) splitLines() bool {
	b := p.b
	p.first = 1
	for start := 0; start < len(b); {
		end := bytes.IndexByte(b[start:], '\n')
		next := len(b)
		if end < 0 {
			end = len(b)
		} else {
			end += start
			next = end + 1
		}
		e := end
		if e > start && b[e-1] == '\r' {
			e--
		}
		ind := 0
		for start+ind < e && b[start+ind] == ' ' {
			ind++
		}
		if bytes.IndexByte(b[start:e], '\t') >= 0 || bytes.IndexByte(b[start:e], '\r') >= 0 || !printable(b[start:e]) {
			return false
		}
		p.lines = append(p.lines, fastLine{start: start, end: e, indent: ind})
		start = next
	}
	if len(p.lines) > 0 {
		l := p.lines[0]
		if isMarker(b[l.start:]) {
			rest := bytes.TrimLeft(b[l.start+3:l.end], " ")
			if len(rest) > 0 && rest[0] != '#' {
				return false
			}
			p.i = 1
		}
		if l.end > l.start && (b[l.start] == '%' || bytes.HasPrefix(b[l.start:l.end], []byte("\xef\xbb\xbf"))) {
			return false
		}
	}
	// Document markers, and anything that starts like one, are left to
	// yaml.v3, except the "---" line that opens a document.
	for i, l := range p.lines {
		if i < p.i || l.indent > 0 {
			continue
		}
		if bytes.HasPrefix(p.b[l.start:l.end], []byte("...")) || bytes.HasPrefix(p.b[l.start:l.end], []byte("---")) {
			return false
		}
	}
	return true
}

// printable reports whether every character of a line is one YAML allows,
// so that the fast parser never accepts what yaml.v3 would refuse.
func printable(b []byte) bool {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < ' ' && c != '\t' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, w := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError || r == 0xFEFF || r >= 0x80 && r <= 0x9F || r == 0xFFFE || r == 0xFFFF {
			return false
		}
		i += w
	}
	return true
}

// blank reports whether a line holds nothing but spaces and a comment.
func (p *fastParser) blank(l fastLine) bool {
	return l.start+l.indent == l.end || p.b[l.start+l.indent] == '#'
}

// skip moves past blank and comment lines.
func (p *fastParser) skip() {
	for p.i < len(p.lines) && p.blank(p.lines[p.i]) {
		p.i++
	}
}

func (p *fastParser) isItem(off int) bool {
	return p.b[off] == '-' && (off+1 == len(p.b) || p.b[off+1] == ' ' || p.b[off+1] == '\n' || p.b[off+1] == '\r')
}

// node makes a node at byte offset off of the current line.
func (p *fastParser) node(kind yaml.Kind, off int) *yaml.Node {
	l := p.lines[p.i]
	col := off - l.start + 1
	if !asciiOnly(p.b[l.start:off]) {
		col = utf8.RuneCount(p.b[l.start:off]) + 1
	}
	if len(p.slab) == 0 {
		p.slab = make([]yaml.Node, 128)
	}
	n := &p.slab[0]
	p.slab = p.slab[1:]
	n.Kind, n.Line, n.Column = kind, p.i+1, col
	return n
}

// hasKey reports whether mapping m already holds key.
func hasKey(m *yaml.Node, key string) bool {
	for i := 0; i < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return true
		}
	}
	return false
}

func asciiOnly(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// mapping parses a block mapping whose keys sit at column ind, the first of
// them at off on the current line.
func (p *fastParser) mapping(ind, off int) (*yaml.Node, bool) {
	m := p.node(yaml.MappingNode, off)
	m.Tag = "!!map"
	for {
		key, rest, ok := p.key(off)
		if !ok || hasKey(m, key.Value) {
			return nil, false
		}
		val, ok := p.value(ind, rest, strings.HasPrefix(key.Value, annotationPrefix))
		if !ok {
			return nil, false
		}
		m.Content = append(m.Content, key, val)
		p.skip()
		if p.i >= len(p.lines) {
			return m, true
		}
		l := p.lines[p.i]
		switch {
		case l.indent < ind:
			return m, true
		case l.indent > ind:
			return nil, false
		case p.isItem(l.start + l.indent):
			// A sequence item at the mapping's column belongs to an
			// enclosing sequence, which value() did not claim.
			return m, true
		}
		off = l.start + l.indent
	}
}

// annotationPrefix marks the keys whose values injection reads.
const annotationPrefix = wellknown.Domain + "/"

// key parses "key:" at off and returns the key and the offset after the
// colon.
func (p *fastParser) key(off int) (*yaml.Node, int, bool) {
	l := p.lines[p.i]
	b := p.b[:l.end]
	k := p.node(yaml.ScalarNode, off)
	k.Tag = "!!str"
	var end int
	switch b[off] {
	case '"', '\'':
		v, e, ok := quoted(b, off)
		if !ok {
			return nil, 0, false
		}
		k.Value, end = v, e
		if b[off] == '"' {
			k.Style = yaml.DoubleQuotedStyle
		} else {
			k.Style = yaml.SingleQuotedStyle
		}
		if end >= len(b) || b[end] != ':' {
			return nil, 0, false
		}
	default:
		i := off
		for i < len(b) && !(b[i] == ':' && (i+1 == len(b) || b[i+1] == ' ')) {
			if b[i] == '#' && b[i-1] == ' ' {
				return nil, 0, false
			}
			i++
		}
		if i == len(b) {
			return nil, 0, false
		}
		text := strings.TrimRight(string(b[off:i]), " ")
		if !plainOK(text, false) {
			return nil, 0, false
		}
		k.Value, end = text, i
		if isNullText(text) {
			k.Tag = "!!null"
		}
	}
	// yaml.v3 reads a key of more than 1024 characters as an error.
	if end-off > maxKeyBytes {
		return nil, 0, false
	}
	return k, end + 1, true
}

// maxKeyBytes stays below the longest simple key YAML allows (1024
// characters).
const maxKeyBytes = 1000

// value parses what follows a key's colon at rest (same line) and, for a
// nested collection, the lines that follow. ind is the key's column.
func (p *fastParser) value(ind, rest int, readValue bool) (*yaml.Node, bool) {
	l := p.lines[p.i]
	b := p.b[:l.end]
	i := rest
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if i < len(b) && b[i] != '#' {
		if i == rest {
			return nil, false
		}
		switch b[i] {
		case '|', '>':
			if readValue {
				return nil, false
			}
			return p.blockScalar(ind, i)
		}
		n, ok := p.inline(i)
		if ok {
			p.i++
		}
		return n, ok
	}
	if i < len(b) && i == rest {
		return nil, false
	}
	// Nothing on the line: a nested collection, or null.
	null := p.node(yaml.ScalarNode, rest)
	null.Tag = "!!null"
	p.i++
	p.skip()
	if p.i >= len(p.lines) {
		return null, true
	}
	n := p.lines[p.i]
	off := n.start + n.indent
	switch {
	case n.indent > ind && p.isItem(off):
		return p.sequence(n.indent)
	case n.indent > ind:
		return p.mapping(n.indent, off)
	case n.indent == ind && p.isItem(off):
		return p.sequence(n.indent)
	}
	return null, true
}

// sequence parses a block sequence whose dashes sit at column ind.
func (p *fastParser) sequence(ind int) (*yaml.Node, bool) {
	l := p.lines[p.i]
	s := p.node(yaml.SequenceNode, l.start+ind)
	s.Tag = "!!seq"
	for {
		l = p.lines[p.i]
		b := p.b[:l.end]
		i := l.start + ind + 1
		for i < len(b) && b[i] == ' ' {
			i++
		}
		if i == len(b) || b[i] == '#' || i == l.start+ind+1 || p.isItem(i) {
			return nil, false
		}
		var item *yaml.Node
		var ok bool
		if p.startsKey(i) {
			item, ok = p.mapping(i-l.start, i)
		} else {
			item, ok = p.inline(i)
			if ok {
				p.i++
			}
		}
		if !ok {
			return nil, false
		}
		s.Content = append(s.Content, item)
		p.skip()
		if p.i >= len(p.lines) {
			return s, true
		}
		n := p.lines[p.i]
		switch {
		case n.indent > ind:
			return nil, false
		case n.indent < ind || !p.isItem(n.start+n.indent):
			return s, true
		}
	}
}

// startsKey reports whether a mapping key starts at off: "key: " or "key:"
// at the end of the line, outside quotes and flow collections.
func (p *fastParser) startsKey(off int) bool {
	l := p.lines[p.i]
	b := p.b[:l.end]
	switch b[off] {
	case '[', '{':
		return false
	case '"', '\'':
		_, e, ok := quoted(b, off)
		return ok && e < len(b) && b[e] == ':'
	}
	for i := off; i < len(b); i++ {
		if b[i] == ':' && (i+1 == len(b) || b[i+1] == ' ') {
			return true
		}
		if b[i] == '#' && i > off && b[i-1] == ' ' {
			return false
		}
	}
	return false
}

// inline parses a scalar or flow collection that ends on its line, followed
// only by spaces and a comment.
func (p *fastParser) inline(off int) (*yaml.Node, bool) {
	l := p.lines[p.i]
	b := p.b[:l.end]
	n, end, ok := p.flowNode(b, off, false, false)
	if !ok {
		return nil, false
	}
	for end < len(b) && b[end] == ' ' {
		end++
	}
	if end < len(b) && !(b[end] == '#' && b[end-1] == ' ') {
		return nil, false
	}
	return n, true
}

// flowNode parses a scalar or flow collection at off; inFlow says whether
// it sits inside a flow collection, where ",[]{}" end plain scalars.
func (p *fastParser) flowNode(b []byte, off int, inFlow, isKey bool) (*yaml.Node, int, bool) {
	switch b[off] {
	case '[', '{':
		return p.flowCollection(b, off)
	case '"', '\'':
		v, end, ok := quoted(b, off)
		if !ok {
			return nil, 0, false
		}
		n := p.node(yaml.ScalarNode, off)
		n.Value, n.Tag = v, "!!str"
		n.Style = yaml.DoubleQuotedStyle
		if b[off] == '\'' {
			n.Style = yaml.SingleQuotedStyle
		}
		return n, end, true
	}
	i := off
	for i < len(b) {
		c := b[i]
		if c == ':' && (i+1 == len(b) || b[i+1] == ' ' || inFlow) {
			break
		}
		if c == '#' && b[i-1] == ' ' {
			break
		}
		if inFlow && (c == ',' || c == '[' || c == ']' || c == '{' || c == '}') {
			break
		}
		i++
	}
	if i < len(b) && b[i] == ':' && !isKey {
		return nil, 0, false
	}
	text := strings.TrimRight(string(b[off:i]), " ")
	if !plainOK(text, inFlow) {
		return nil, 0, false
	}
	n := p.node(yaml.ScalarNode, off)
	n.Value = text
	n.Tag = "!!str"
	if isNullText(text) {
		n.Tag = "!!null"
	}
	return n, off + len(text), true
}

// flowCollection parses [..] or {..} that closes on the same line. Keys of
// flow mappings are plain or quoted scalars followed by ": ".
func (p *fastParser) flowCollection(b []byte, off int) (*yaml.Node, int, bool) {
	isMap := b[off] == '{'
	n := p.node(yaml.SequenceNode, off)
	n.Tag, n.Style = "!!seq", yaml.FlowStyle
	closer := byte(']')
	if isMap {
		n.Kind, n.Tag, closer = yaml.MappingNode, "!!map", '}'
	}
	i := off + 1
	for {
		for i < len(b) && b[i] == ' ' {
			i++
		}
		if i >= len(b) {
			return nil, 0, false
		}
		if b[i] == closer {
			return n, i + 1, true
		}
		if len(n.Content) > 0 {
			if b[i] != ',' {
				return nil, 0, false
			}
			i++
			for i < len(b) && b[i] == ' ' {
				i++
			}
			if i >= len(b) || b[i] == closer || b[i] == ',' {
				return nil, 0, false
			}
		}
		if b[i] == '#' || b[i] == ',' {
			return nil, 0, false
		}
		if isMap {
			k, end, ok := p.flowNode(b, i, true, true)
			if !ok || k.Kind != yaml.ScalarNode || k.Tag == "!!null" || hasKey(n, k.Value) || end-i > maxKeyBytes || end+1 >= len(b) || b[end] != ':' || b[end+1] != ' ' {
				return nil, 0, false
			}
			k.Tag = "!!str"
			i = end + 2
			for i < len(b) && b[i] == ' ' {
				i++
			}
			if i >= len(b) || b[i] == ',' || b[i] == closer || b[i] == '#' {
				return nil, 0, false
			}
			v, vend, ok := p.flowNode(b, i, true, false)
			if !ok {
				return nil, 0, false
			}
			n.Content = append(n.Content, k, v)
			i = vend
			continue
		}
		v, end, ok := p.flowNode(b, i, true, false)
		if !ok {
			return nil, 0, false
		}
		n.Content = append(n.Content, v)
		i = end
	}
}

// blockScalar takes "|" or ">" (with a chomping indicator) at off and the
// more indented lines after it. Its value is not computed: injection never
// reads one (value() declines those it would read).
func (p *fastParser) blockScalar(ind, off int) (*yaml.Node, bool) {
	l := p.lines[p.i]
	b := p.b[:l.end]
	n := p.node(yaml.ScalarNode, off)
	n.Tag = "!!str"
	n.Style = yaml.LiteralStyle
	if b[off] == '>' {
		n.Style = yaml.FoldedStyle
	}
	i := off + 1
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		i++
	}
	if i < len(b) && b[i] != ' ' {
		return nil, false
	}
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if i < len(b) && b[i] != '#' {
		return nil, false
	}
	p.i++
	content, leading := -1, 0
	for p.i < len(p.lines) {
		c := p.lines[p.i]
		if c.start+c.indent == c.end {
			if content < 0 {
				leading = max(leading, c.indent)
			}
			p.i++
			continue
		}
		if c.indent <= ind {
			break
		}
		if content < 0 {
			content = c.indent
			if leading > content {
				return nil, false
			}
		}
		if c.indent < content {
			return nil, false
		}
		p.i++
	}
	// Trailing blank lines more indented than the content would be
	// content to yaml.v3 too; the caller's skip() passes over them.
	return n, content > 0
}

// quoted parses a single-line quoted scalar at off: double-quoted without
// escapes, or single-quoted. It returns the value and the offset after the
// closing quote.
func quoted(b []byte, off int) (string, int, bool) {
	q := b[off]
	if q == '"' {
		for i := off + 1; i < len(b); i++ {
			if b[i] < ' ' || b[i] == 0x7f {
				return "", 0, false
			}
			switch b[i] {
			case '\\':
				return "", 0, false
			case '"':
				return string(b[off+1 : i]), i + 1, true
			}
		}
		return "", 0, false
	}
	var sb strings.Builder
	for i := off + 1; i < len(b); i++ {
		if b[i] == '\'' {
			if i+1 < len(b) && b[i+1] == '\'' {
				sb.WriteByte('\'')
				i++
				continue
			}
			return sb.String(), i + 1, true
		}
		if b[i] < ' ' || b[i] == 0x7f {
			return "", 0, false
		}
		sb.WriteByte(b[i])
	}
	return "", 0, false
}

// plainOK accepts the plain scalars whose reading is the same in every YAML
// context: no leading indicator, no ": " or " #" inside (the callers cut at
// those), and no characters that would make the parser look twice.
func plainOK(s string, inFlow bool) bool {
	if s == "" {
		return false
	}
	switch s[0] {
	case '-':
		if len(s) == 1 || s[1] == ' ' {
			return false
		}
	case '?', ':', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', ',':
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c == 0x7f {
			return false
		}
		// yaml.v3 reads some indicators inside flow plain scalars in its
		// own way ("a?" is an error there); only the plainest characters
		// are accepted in flow collections.
		if inFlow && !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(" ._/=+@-", c) >= 0) {
			return false
		}
	}
	return !strings.Contains(s, " #")
}

func isNullText(s string) bool {
	switch s {
	case "~", "null", "Null", "NULL":
		return true
	}
	return false
}
