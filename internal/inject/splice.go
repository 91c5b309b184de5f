package inject

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// edit replaces src[at:end] with text; at == end inserts.
type edit struct {
	at, end int
	text    string
}

// errFormatting is returned when the text around a node is not where or
// what the parser's positions promise; injection refuses rather than guess.
type errFormatting struct {
	line int
	what string
}

func (e *errFormatting) Error() string {
	return fmt.Sprintf("line %d: cannot edit %s in this formatting", e.line, e.what)
}

// splicer collects the edits of one document.
type splicer struct {
	src   *source
	style blockStyle
	edits []edit
	*cache
}

// cache keeps, across the documents of a stream, what injection builds and
// renders: thousands of workloads get the same proxy in the same style, and
// building and rendering it was most of the cost of injection after parsing.
// A nil cache caches nothing.
type cache struct {
	texts  map[string]string
	values map[string]any
}

// memo returns the value build makes, once per key.
func (c *cache) memo(key string, build func() any) any {
	if c == nil {
		return build()
	}
	if v, ok := c.values[key]; ok {
		return v
	}
	v := build()
	c.values[key] = v
	return v
}

// render returns the text f writes, from the cache when key is not empty.
func (sp *splicer) render(key string, f func(*strings.Builder)) string {
	if key != "" && sp.cache != nil {
		if t, ok := sp.texts[key]; ok {
			return t
		}
	}
	var w strings.Builder
	f(&w)
	t := w.String()
	if key != "" && sp.cache != nil {
		sp.texts[key] = t
	}
	return t
}

func (sp *splicer) fail(n *yaml.Node, what string) error {
	return &errFormatting{line: sp.src.firstLine + n.Line - 1, what: what}
}

// apply returns the document with the edits made.
func (sp *splicer) apply() ([]byte, error) {
	sort.SliceStable(sp.edits, func(i, j int) bool { return sp.edits[i].at < sp.edits[j].at })
	var out bytes.Buffer
	n := len(sp.src.b)
	for _, e := range sp.edits {
		n += len(e.text) - (e.end - e.at)
	}
	out.Grow(n)
	prev, deleted := 0, false
	for _, e := range sp.edits {
		if e.at < prev {
			// Two removals that meet (an entry removed up to the next
			// key, and that key's lines from their start) remove their
			// union.
			if !deleted || e.text != "" {
				return nil, fmt.Errorf("overlapping edits at byte %d", e.at)
			}
			if e.end <= prev {
				continue
			}
			e.at = prev
		}
		deleted = e.text == "" && e.end > e.at
		out.Write(sp.src.b[prev:e.at])
		out.WriteString(e.text)
		prev = e.end
	}
	out.Write(sp.src.b[prev:])
	return out.Bytes(), nil
}

func isFlow(n *yaml.Node) bool { return n.Style&yaml.FlowStyle != 0 }

// opening returns the offset of a collection's node and checks that the
// expected character is there.
func (sp *splicer) opening(n *yaml.Node, want byte, what string) (int, error) {
	p := sp.src.at(n)
	if p < 0 || p >= len(sp.src.b) || sp.src.b[p] != want {
		return 0, sp.fail(n, what)
	}
	return p, nil
}

// insertEntries adds entries at the start of mapping m.
//
// key names the entries for the cache of rendered text ("" for no caching):
// equal keys must mean equal entries.
func (sp *splicer) insertEntries(m *yaml.Node, entries object, what, key string) error {
	if isFlow(m) {
		texts := make([]string, len(entries))
		for i, f := range entries {
			texts[i] = flowText(f.key) + ": " + flowText(f.val)
		}
		return sp.insertFlow(m, '{', texts, what)
	}
	// The first key's position, not the mapping's: a tag or anchor of the
	// mapping stands before its first key.
	first := m
	if len(m.Content) > 0 {
		first = m.Content[0]
	}
	p := sp.src.at(first)
	if p < 0 || !isASCIIIndent(sp.src.b[sp.src.lineStart(p):p]) {
		return sp.fail(m, what)
	}
	col := sp.src.column(p)
	eol := sp.src.eol(p)
	st := sp.style
	st.eol = eol
	text := sp.render(cacheKey(key, st, col), func(w *strings.Builder) {
		for _, f := range entries {
			st.entry(w, f.key, f.val, col)
			w.WriteString(eol)
			st.indent(w, col)
		}
	})
	sp.edits = append(sp.edits, edit{p, p, text})
	return nil
}

func cacheKey(key string, st blockStyle, col int) string {
	if key == "" {
		return ""
	}
	return fmt.Sprintf("%s|%q|%d|%d|%t|%d", key, st.eol, st.step, st.gap, st.indentSeq, col)
}

// insertItems adds items at the start of sequence seq.
func (sp *splicer) insertItems(seq *yaml.Node, items list, what, key string) error {
	if isFlow(seq) {
		texts := make([]string, len(items))
		for i, it := range items {
			texts[i] = flowText(it)
		}
		return sp.insertFlow(seq, '[', texts, what)
	}
	p, err := sp.opening(seq, '-', what)
	if err != nil {
		return err
	}
	if !isASCIIIndent(sp.src.b[sp.src.lineStart(p):p]) {
		return sp.fail(seq, what)
	}
	col := sp.src.column(p)
	eol := sp.src.eol(p)
	st := sp.style
	st.eol = eol
	st.gap = 2
	if len(seq.Content) > 0 {
		if c := sp.src.at(seq.Content[0]); c-p >= 2 && c-p <= 8 && !bytes.ContainsAny(sp.src.b[p:c], "\r\n") {
			st.gap = c - p
		}
	}
	text := sp.render(cacheKey(key, st, col), func(w *strings.Builder) {
		for _, it := range items {
			st.item(w, it, col)
			w.WriteString(eol)
			st.indent(w, col)
		}
	})
	sp.edits = append(sp.edits, edit{p, p, text})
	return nil
}

// insertFlow adds JSON-encoded items at the start of a flow collection. When
// the collection's first item starts a line of its own, each new item gets a
// line of its own with the same indentation; otherwise they go inline.
func (sp *splicer) insertFlow(n *yaml.Node, open byte, texts []string, what string) error {
	p, err := sp.opening(n, open, what)
	if err != nil {
		return err
	}
	if len(n.Content) == 0 {
		sp.edits = append(sp.edits, edit{p + 1, p + 1, strings.Join(texts, ", ")})
		return nil
	}
	first := sp.src.at(n.Content[0])
	if first < 0 {
		return sp.fail(n, what)
	}
	if ls := sp.src.lineStart(first); ls > p && sp.src.blankBefore(first) {
		indent := string(sp.src.b[ls:first])
		eol := sp.src.eol(first)
		var w strings.Builder
		for _, t := range texts {
			w.WriteString(indent + t + "," + eol)
		}
		sp.edits = append(sp.edits, edit{ls, ls, w.String()})
		return nil
	}
	var w strings.Builder
	for _, t := range texts {
		w.WriteString(t + ", ")
	}
	sp.edits = append(sp.edits, edit{first, first, w.String()})
	return nil
}

func isASCIIIndent(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '-' {
			return false
		}
	}
	return true
}

// removeEntry removes the entry of key k from mapping m: from the key to the
// next key, which is exactly what insertEntries added.
func (sp *splicer) removeEntry(m *yaml.Node, k *yaml.Node, what string) error {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i] != k {
			continue
		}
		return sp.removeSpan(m, i, i+2, 2, what)
	}
	return sp.fail(m, what)
}

// removeEntries removes the entries of mapping m whose keys are in keys.
func (sp *splicer) removeEntries(m *yaml.Node, keys map[string]bool, what string) error {
	drop := func(i int) bool { return i+1 < len(m.Content) && keys[m.Content[i].Value] }
	for i := 0; i < len(m.Content); i += 2 {
		if !drop(i) {
			continue
		}
		j := i + 2
		for drop(j) {
			j += 2
		}
		if err := sp.removeSpan(m, i, j, 2, what); err != nil {
			return err
		}
		i = j - 2
	}
	return nil
}

// removeItems removes the items whose indexes are in drop from sequence seq.
func (sp *splicer) removeItems(seq *yaml.Node, drop map[int]bool, what string) error {
	for i := 0; i < len(seq.Content); i++ {
		if !drop[i] {
			continue
		}
		j := i + 1
		for j < len(seq.Content) && drop[j] {
			j++
		}
		if err := sp.removeSpan(seq, i, j, 1, what); err != nil {
			return err
		}
		i = j - 1
	}
	return nil
}

// removeSpan removes children [from, to) of collection n (for a mapping,
// indexes into Content counting keys and values; stride 2).
func (sp *splicer) removeSpan(n *yaml.Node, from, to, stride int, what string) error {
	start, err := sp.childStart(n, from)
	if err != nil {
		return err
	}
	if to < len(n.Content) {
		end, err := sp.childStart(n, to)
		if err != nil {
			return err
		}
		sp.edits = append(sp.edits, edit{start, end, ""})
		return nil
	}
	// The removed children end the collection. Injection only ever puts
	// them there in an empty flow collection, but an API server that sorts
	// keys (and `-o json`, which does too) moves them there.
	if isFlow(n) {
		return sp.removeFlowTail(n, from, start, what)
	}
	return sp.removeBlockTail(n, from, start, what)
}

// removeFlowTail removes the children of flow collection n from index from
// to its end, child from starting at start: with the comma before them, so
// that the collection's own closing bracket stays where it was.
func (sp *splicer) removeFlowTail(n *yaml.Node, from, start int, what string) error {
	end := sp.flowNodeEnd(n.Content[len(n.Content)-1])
	if end < 0 {
		return sp.fail(n, what)
	}
	if from > 0 {
		if start = sp.flowNodeEnd(n.Content[from-1]); start < 0 {
			return sp.fail(n, what)
		}
	}
	sp.edits = append(sp.edits, edit{start, end, ""})
	return nil
}

// removeBlockTail removes the children of block collection n from index
// from to its end: whole lines, from the line of child from to the last line
// indented under the collection. Removing every child would leave a key
// without a value, which the caller must handle.
func (sp *splicer) removeBlockTail(n *yaml.Node, from, start int, what string) error {
	if !sp.src.blankBefore(start) {
		return sp.fail(n, what+" (it is no longer where injection put it)")
	}
	first, err := sp.childStart(n, 0)
	if err != nil {
		return err
	}
	col := sp.src.column(first)
	lastIndex := len(n.Content) - 1
	if n.Kind == yaml.MappingNode {
		lastIndex--
	}
	last, err := sp.childStart(n, lastIndex)
	if err != nil {
		return err
	}
	b := sp.src.b
	start = sp.src.lineStart(start)
	end := lineEnd(b, last)
	for i := end; i < len(b); {
		next := lineEnd(b, i)
		line := b[i:next]
		indent := 0
		for indent < len(line) && line[indent] == ' ' {
			indent++
		}
		rest := bytes.TrimRight(line[indent:], "\r\n")
		switch {
		case len(rest) == 0 || rest[0] == '#':
			// Blank lines and comments belong to what follows them.
		case indent < col, indent == col && !(rest[0] == '-' && (len(rest) == 1 || rest[1] == ' ')):
			next = len(b)
		default:
			end = next
		}
		i = next
	}
	if from == 0 {
		// Every child goes: the collection becomes an empty flow one
		// after its key's colon or its item's dash.
		p := start - 1
		for p >= 0 && (b[p] == ' ' || b[p] == '\n' || b[p] == '\r') {
			p--
		}
		if p < 0 || b[p] != ':' && b[p] != '-' {
			return sp.fail(n, what)
		}
		empty := " {}"
		if n.Kind == yaml.SequenceNode {
			empty = " []"
		}
		eol := ""
		if end > 0 && b[end-1] == '\n' {
			eol = sp.src.eol(start)
		}
		sp.edits = append(sp.edits, edit{p + 1, end, empty + eol})
		return nil
	}
	// The document's last line may lack a line break; then the break
	// before the removed lines goes instead, so that none is added.
	if end == len(b) && (len(b) == 0 || b[len(b)-1] != '\n') && start > 0 {
		start--
		if start > 0 && b[start-1] == '\r' {
			start--
		}
	}
	sp.edits = append(sp.edits, edit{start, end, ""})
	return nil
}

// lineEnd returns the offset just past the line break of the line holding
// off, or the end of b.
func lineEnd(b []byte, off int) int {
	if i := bytes.IndexByte(b[off:], '\n'); i >= 0 {
		return off + i + 1
	}
	return len(b)
}

// flowNodeEnd returns the offset just past a node inside a flow collection,
// or -1. Injection only writes JSON there, so collections and double-quoted
// scalars are what it must find the end of; plain scalars end at the next
// indicator.
func (sp *splicer) flowNodeEnd(n *yaml.Node) int {
	p := sp.src.at(n)
	if p < 0 || p >= len(sp.src.b) {
		return -1
	}
	b := sp.src.b
	switch b[p] {
	case '{', '[':
		if e := sp.src.flowEnd(p); e >= 0 {
			return e + 1
		}
		return -1
	case '"':
		for i := p + 1; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return -1
	case '\'':
		for i := p + 1; i < len(b); i++ {
			if b[i] == '\'' {
				if i+1 < len(b) && b[i+1] == '\'' {
					i++
					continue
				}
				return i + 1
			}
		}
		return -1
	}
	i := p
	for i < len(b) && !bytes.ContainsRune([]byte(",]}\r\n"), rune(b[i])) {
		i++
	}
	for i > p && (b[i-1] == ' ' || b[i-1] == '\t') {
		i--
	}
	return i
}

// childStart returns where child i of n starts in the text: the dash of a
// block sequence item, the key of a mapping entry, the first character of a
// flow item.
func (sp *splicer) childStart(n *yaml.Node, i int) (int, error) {
	c := n.Content[i]
	p := sp.src.at(c)
	if p < 0 {
		return 0, sp.fail(c, "an item")
	}
	if n.Kind != yaml.SequenceNode || isFlow(n) {
		return p, nil
	}
	if i == 0 {
		return sp.opening(n, '-', "a list item")
	}
	j := p
	for j > 0 && (sp.src.b[j-1] == ' ' || sp.src.b[j-1] == '\t' || sp.src.b[j-1] == '\n' || sp.src.b[j-1] == '\r') {
		j--
	}
	if j == 0 || sp.src.b[j-1] != '-' {
		return 0, sp.fail(c, "a list item")
	}
	return j - 1, nil
}
