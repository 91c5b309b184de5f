// Package ui holds every style meshctl prints with. Styles degrade to plain
// text when the stream is not a terminal or NO_COLOR is set, so golden files
// and pipes never carry escape codes.
package ui

import (
	"fmt"
	"io"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
)

// Printer writes styled lines to one stream.
type Printer struct {
	w        io.Writer
	r        *lipgloss.Renderer
	ok       lipgloss.Style
	fail     lipgloss.Style
	warn     lipgloss.Style
	heading  lipgloss.Style
	faint    lipgloss.Style
	emphasis lipgloss.Style
}

// Glyphs of results. They are plain characters so they survive any terminal.
const (
	GlyphOK   = "√"
	GlyphFail = "×"
	GlyphWarn = "‼"
	GlyphWait = "…"
)

// New returns a Printer for w; colour enables styling.
func New(w io.Writer, colour bool) *Printer {
	r := lipgloss.NewRenderer(w)
	if colour {
		r.SetColorProfile(termenv.ANSI256)
	} else {
		r.SetColorProfile(termenv.Ascii)
	}
	return &Printer{
		w:        w,
		r:        r,
		ok:       r.NewStyle().Foreground(lipgloss.Color("2")),
		fail:     r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		warn:     r.NewStyle().Foreground(lipgloss.Color("3")),
		heading:  r.NewStyle().Bold(true),
		faint:    r.NewStyle().Faint(true),
		emphasis: r.NewStyle().Foreground(lipgloss.Color("6")),
	}
}

// Writer is the stream the Printer writes to.
func (p *Printer) Writer() io.Writer { return p.w }

// OK, Fail, Warn and Wait style a glyph and message as one line's content.
func (p *Printer) OK(msg string) string   { return p.ok.Render(GlyphOK) + " " + msg }
func (p *Printer) Fail(msg string) string { return p.fail.Render(GlyphFail) + " " + msg }
func (p *Printer) Warn(msg string) string { return p.warn.Render(GlyphWarn) + " " + msg }
func (p *Printer) Wait(msg string) string { return p.faint.Render(GlyphWait) + " " + msg }

// Heading, Faint and Emphasis style text.
func (p *Printer) Heading(s string) string  { return p.heading.Render(s) }
func (p *Printer) Faint(s string) string    { return p.faint.Render(s) }
func (p *Printer) Emphasis(s string) string { return p.emphasis.Render(s) }
func (p *Printer) Red(s string) string      { return p.fail.Render(s) }
func (p *Printer) Green(s string) string    { return p.ok.Render(s) }
func (p *Printer) Yellow(s string) string   { return p.warn.Render(s) }

// Println writes one line.
func (p *Printer) Println(a ...any) { fmt.Fprintln(p.w, a...) }

// Printf writes formatted text.
func (p *Printer) Printf(format string, a ...any) { fmt.Fprintf(p.w, format, a...) }
