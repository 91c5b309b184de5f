package check

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocsDescribeEveryCheck keeps docs/check.md, where hints link, in step
// with the checks: each check's anchor is followed by a heading with its
// description and a line that gives its severity, and every anchor in the
// file belongs to a check.
func TestDocsDescribeEveryCheck(t *testing.T) {
	doc, err := os.ReadFile("../../docs/check.md")
	if err != nil {
		t.Fatal(err)
	}
	// An anchor, its heading, and the severity in italics that opens the
	// section's text.
	section := regexp.MustCompile(`<a id="([^"]+)"></a>\n### ([^\n]+)\n\n\*([^*]+)\.\*`)
	type documented struct{ description, severity string }
	docs := map[string]documented{}
	for _, m := range section.FindAllStringSubmatch(string(doc), -1) {
		docs[m[1]] = documented{m[2], m[3]}
	}
	if n := strings.Count(string(doc), `<a id="`); n != len(docs) {
		t.Errorf("docs/check.md has %d anchors, %d of them in the form this test reads", n, len(docs))
	}
	used := map[string]bool{}
	for _, cats := range [][]Category{PreInstall(), PostInstall()} {
		for _, cat := range cats {
			for _, c := range cat.Checks {
				used[c.Hint] = true
				d, ok := docs[c.Hint]
				if !ok {
					t.Errorf("%s: no section with anchor %q in docs/check.md", c.Description, c.Hint)
					continue
				}
				if d.description != c.Description {
					t.Errorf("anchor %q: heading %q, check %q", c.Hint, d.description, c.Description)
				}
				want := map[Severity]string{Fatal: "fatal", Error: "error", Warning: "warning"}[c.Severity]
				if c.Retry {
					want += ", retried"
				}
				if d.severity != want {
					t.Errorf("%s: documented as %q, is %q", c.Description, d.severity, want)
				}
			}
		}
	}
	for anchor := range docs {
		if !used[anchor] {
			t.Errorf("docs/check.md documents anchor %q, which no check uses", anchor)
		}
	}
}
