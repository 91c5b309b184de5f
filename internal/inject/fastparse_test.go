package inject

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// sameTree compares what injection reads of two node trees: kinds, styles,
// positions, scalar values (but those of block scalars, which the fast parser
// does not compute) and null tags.
func sameTree(a, b *yaml.Node, path string) error {
	if a.Kind != b.Kind || a.Line != b.Line || a.Column != b.Column || a.Style != b.Style || (a.Tag == "!!null") != (b.Tag == "!!null") {
		return fmt.Errorf("%s: fast %v L%d C%d style %v tag %s, yaml.v3 %v L%d C%d style %v tag %s", path, a.Kind, a.Line, a.Column, a.Style, a.Tag, b.Kind, b.Line, b.Column, b.Style, b.Tag)
	}
	if a.Kind == yaml.ScalarNode && a.Style&(yaml.LiteralStyle|yaml.FoldedStyle) == 0 && a.Value != b.Value {
		return fmt.Errorf("%s: fast value %q, yaml.v3 %q", path, a.Value, b.Value)
	}
	if len(a.Content) != len(b.Content) {
		return fmt.Errorf("%s: fast has %d children, yaml.v3 %d", path, len(a.Content), len(b.Content))
	}
	for i := range a.Content {
		if err := sameTree(a.Content[i], b.Content[i], fmt.Sprintf("%s/%d", path, i)); err != nil {
			return err
		}
	}
	return nil
}

// checkFastParse fails when the fast parser accepts a document that yaml.v3
// refuses or reads differently.
func checkFastParse(t *testing.T, doc []byte) bool {
	t.Helper()
	fast, ok := fastParse(doc)
	if !ok {
		return false
	}
	var n yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	if err := dec.Decode(&n); err != nil {
		t.Fatalf("fast parser accepted what yaml.v3 refuses (%v):\n%q", err, doc)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		t.Fatalf("fast parser accepted a stream of several documents:\n%q", doc)
	}
	if len(n.Content) != 1 {
		t.Fatalf("fast parser found a root in an empty document:\n%q", doc)
	}
	if err := sameTree(fast, n.Content[0], ""); err != nil {
		t.Fatalf("%v\n%q", err, doc)
	}
	return true
}

func TestFastParseAgreesOnFixtures(t *testing.T) {
	accepted := 0
	var streams [][]byte
	for _, f := range fixtures(t) {
		for _, p := range []string{f.input, f.golden} {
			b, err := os.ReadFile(p)
			if err == nil {
				streams = append(streams, b)
			}
		}
	}
	streams = append(streams, deploymentStream(3))
	for _, b := range streams {
		docs, err := splitDocuments(b)
		if err != nil {
			continue
		}
		for _, d := range docs {
			if checkFastParse(t, d.b) {
				accepted++
			}
		}
	}
	if accepted < 30 {
		t.Errorf("the fast parser accepted only %d documents of the fixtures", accepted)
	}
}

func TestFastParseDeclines(t *testing.T) {
	for _, doc := range []string{
		"a: &x 1\nb: *x\n",
		"a: !!str 1\n",
		"a: b\n  c\n",
		"a: \"x\\ty\"\n",
		"a: [1,\n  2]\n",
		"a: 1\na: 2\n",
		"a:\tb\n",
		"? a\n: b\n",
		"{\"a\": 1}\n",
		"a: b: c\n",
		"- - a\n",
		"a: |2\n   x\n",
		"a: 1\n...\n",
		"# only a comment\n",
	} {
		if _, ok := fastParse([]byte(doc)); ok {
			t.Errorf("fast parser accepted %q", doc)
		}
	}
}

// FuzzFastParse holds the fast parser to yaml.v3: whatever it accepts,
// yaml.v3 accepts and reads the same way.
//
//	go test -fuzz FuzzFastParse ./internal/inject
func FuzzFastParse(f *testing.F) {
	for _, fx := range fixtures(f) {
		b, err := os.ReadFile(fx.input)
		if err != nil {
			f.Fatal(err)
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			f.Add([]byte(doc))
		}
	}
	f.Add(deploymentStream(1))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if bytes.ContainsAny(doc, "\u0085\u2028\u2029") {
			return
		}
		checkFastParse(t, doc)
	})
}
