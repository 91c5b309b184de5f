package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Style renders glyph lines and text attributes. internal/cli/ui's Printer
// satisfies it with colours; Plain is the same without.
type Style interface {
	OK(msg string) string
	Fail(msg string) string
	Warn(msg string) string
	Wait(msg string) string
	Heading(s string) string
	Faint(s string) string
}

// Plain is a Style without colours, with the same glyphs as the CLI's.
type Plain struct{}

var _ Style = Plain{}

func (Plain) OK(msg string) string    { return "√ " + msg }
func (Plain) Fail(msg string) string  { return "× " + msg }
func (Plain) Warn(msg string) string  { return "‼ " + msg }
func (Plain) Wait(msg string) string  { return "… " + msg }
func (Plain) Heading(s string) string { return s }
func (Plain) Faint(s string) string   { return s }

// Printer writes a run's results: Print for each result as Run observes it,
// then Finish once with the summary.
type Printer interface {
	Print(r Result)
	Finish(s Summary) error
}

// Output formats of NewPrinter.
const (
	FormatTable = "table"
	FormatShort = "short"
	FormatJSON  = "json"
)

// Formats lists the output formats, the default first.
var Formats = []string{FormatTable, FormatShort, FormatJSON}

// NewPrinter returns the printer of format ("" is the table) writing to w.
func NewPrinter(format string, w io.Writer, st Style) (Printer, error) {
	switch format {
	case "", FormatTable:
		return &tablePrinter{w: w, st: st}, nil
	case FormatShort:
		return &tablePrinter{w: w, st: st, short: true}, nil
	case FormatJSON:
		return &jsonPrinter{w: w}, nil
	}
	return nil, fmt.Errorf("unknown output format %q: use one of %s", format, strings.Join(Formats, ", "))
}

// tablePrinter prints a heading per category and a glyph line per check as
// results come. Short mode prints only the problems, and a category's
// heading only before its first problem.
type tablePrinter struct {
	w        io.Writer
	st       Style
	short    bool
	category string // heading last printed
	waiting  string // description of the check whose retry was announced
	problems bool
}

func (p *tablePrinter) heading(category string) {
	if p.category == category {
		return
	}
	if p.category != "" {
		fmt.Fprintln(p.w)
	}
	p.category = category
	fmt.Fprintln(p.w, p.st.Heading(category))
	fmt.Fprintln(p.w, p.st.Heading(strings.Repeat("-", len(category))))
}

func (p *tablePrinter) Print(r Result) {
	if r.Retrying {
		// One line per retried check: its reason when it first failed.
		// Later attempts stay quiet so a pipe does not fill with repeats.
		if p.short || p.waiting == r.Description {
			return
		}
		p.waiting = r.Description
		p.heading(r.Category)
		fmt.Fprintln(p.w, p.st.Wait(r.Description+" "+p.st.Faint("(waiting: "+firstLine(r.Err.Error())+")")))
		return
	}
	status := r.Status()
	if p.short && status == StatusSuccess {
		return
	}
	p.heading(r.Category)
	switch status {
	case StatusSuccess:
		fmt.Fprintln(p.w, p.st.OK(r.Description))
		return
	case StatusWarning:
		fmt.Fprintln(p.w, p.st.Warn(r.Description))
	default:
		fmt.Fprintln(p.w, p.st.Fail(r.Description))
	}
	p.problems = true
	for _, line := range strings.Split(strings.TrimRight(r.Err.Error(), "\n"), "\n") {
		fmt.Fprintln(p.w, "    "+line)
	}
	fmt.Fprintln(p.w, "    "+p.st.Faint("see "+r.HintURL+" for hints"))
}

func (p *tablePrinter) Finish(s Summary) error {
	if !p.short || p.problems {
		fmt.Fprintln(p.w)
	}
	if s.Err != nil {
		fmt.Fprintln(p.w, p.st.Fail(s.Err.Error()))
	}
	glyph := p.st.OK("")
	if !s.Success {
		glyph = p.st.Fail("")
	}
	_, err := fmt.Fprintln(p.w, "Status check results are "+strings.TrimSpace(glyph))
	return err
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// jsonPrinter collects the results and writes one JSON document at Finish,
// and nothing else, so that the output always parses.
type jsonPrinter struct {
	w      io.Writer
	report jsonReport
}

type jsonReport struct {
	Success    bool           `json:"success"`
	Error      string         `json:"error,omitempty"`
	Categories []jsonCategory `json:"categories"`
}

type jsonCategory struct {
	Name   string      `json:"categoryName"`
	Checks []jsonCheck `json:"checks"`
}

type jsonCheck struct {
	Description string `json:"description"`
	Hint        string `json:"hint"`
	Error       string `json:"error,omitempty"`
	Result      Status `json:"result"`
}

func (p *jsonPrinter) Print(r Result) {
	if r.Retrying {
		return
	}
	cats := p.report.Categories
	if len(cats) == 0 || cats[len(cats)-1].Name != r.Category {
		cats = append(cats, jsonCategory{Name: r.Category, Checks: []jsonCheck{}})
	}
	c := jsonCheck{Description: r.Description, Hint: r.HintURL, Result: r.Status()}
	if r.Err != nil {
		c.Error = r.Err.Error()
	}
	last := &cats[len(cats)-1]
	last.Checks = append(last.Checks, c)
	p.report.Categories = cats
}

func (p *jsonPrinter) Finish(s Summary) error {
	p.report.Success = s.Success
	if s.Err != nil {
		p.report.Error = s.Err.Error()
	}
	if p.report.Categories == nil {
		p.report.Categories = []jsonCategory{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(p.report); err != nil {
		return fmt.Errorf("encoding the report: %w", err)
	}
	_, err := p.w.Write(buf.Bytes())
	return err
}
