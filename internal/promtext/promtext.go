// Package promtext writes the Prometheus text exposition format (version
// 0.0.4), the one writer of the proxy's and the controller's /metrics.
//
// It imports only the standard library because the sidecar links it
// (cmd/meshproxy's dependency test): client_golang would bring its
// registry, protobuf and more into every meshed pod for what is a few
// escapes and number formats. Its output is held to Prometheus' own parser
// by the tests of every package that writes metrics (promtexttest).
package promtext

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Metric types, as the TYPE line names them.
const (
	Counter   = "counter"
	Gauge     = "gauge"
	Histogram = "histogram"
)

// Writer writes metric families to an io.Writer through a buffer. Write
// errors are kept and returned by Flush, so that a series of calls needs
// one check. A Writer is not safe for concurrent use.
type Writer struct {
	w   *bufio.Writer
	num []byte // scratch for number formatting
}

// NewWriter returns a Writer that buffers what it writes to w; call Flush
// at the end.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriter(w), num: make([]byte, 0, 32)}
}

// Flush writes what is buffered and returns the first write error.
func (w *Writer) Flush() error { return w.w.Flush() }

// Header starts a metric family: its HELP and TYPE lines. typ is Counter,
// Gauge or Histogram; help is escaped as the format wants (backslash and
// line feed). Every family must have one Header, before its samples, and
// its samples must follow it without another family's in between.
func (w *Writer) Header(name, typ, help string) {
	w.w.WriteString("# HELP ")
	w.w.WriteString(name)
	w.w.WriteByte(' ')
	writeEscaped(w.w, help, false)
	w.w.WriteString("\n# TYPE ")
	w.w.WriteString(name)
	w.w.WriteByte(' ')
	w.w.WriteString(typ)
	w.w.WriteByte('\n')
}

// Sample writes one sample: name, labels given as name/value pairs
// ("code", "200", "method", "GET"; an odd last name is ignored), and v.
// Label values are escaped; label names are the caller's constants.
func (w *Writer) Sample(name string, v float64, labels ...string) {
	w.start2(name, "", labels, "", "")
	w.num = appendFloat(w.num[:0], v)
	w.end()
}

// SampleUint is Sample for a count, written exactly however large (a
// float64 holds integers exactly only up to 2^53).
func (w *Writer) SampleUint(name string, v uint64, labels ...string) {
	w.start2(name, "", labels, "", "")
	w.num = strconv.AppendUint(w.num[:0], v, 10)
	w.end()
}

// SampleInt is SampleUint for a value that may be negative.
func (w *Writer) SampleInt(name string, v int64, labels ...string) {
	w.start2(name, "", labels, "", "")
	w.num = strconv.AppendInt(w.num[:0], v, 10)
	w.end()
}

// Histogram writes the samples of one histogram series: name_bucket for
// each upper bound in bounds (ascending, in seconds or whatever unit the
// family has) and for +Inf, then name_sum and name_count. counts[i] is the
// number of observations in bucket i alone (not cumulative), and
// counts[len(bounds)] those above the last bound; labels are as in Sample.
// The family's Header (type Histogram) is the caller's.
func (w *Writer) Histogram(name string, bounds []float64, counts []uint64, sum float64, labels ...string) {
	var cum uint64
	for i := 0; i <= len(bounds) && i < len(counts); i++ {
		cum += counts[i]
		le := "+Inf"
		if i < len(bounds) {
			le = strconv.FormatFloat(bounds[i], 'g', -1, 64)
		}
		w.start2(name, "_bucket", labels, "le", le)
		w.num = strconv.AppendUint(w.num[:0], cum, 10)
		w.end()
	}
	w.start2(name, "_sum", labels, "", "")
	w.num = appendFloat(w.num[:0], sum)
	w.end()
	w.start2(name, "_count", labels, "", "")
	w.num = strconv.AppendUint(w.num[:0], cum, 10)
	w.end()
}

// start2 writes name+suffix and the label set, with one more label after
// labels when extraName is set.
func (w *Writer) start2(name, suffix string, labels []string, extraName, extraValue string) {
	w.w.WriteString(name)
	w.w.WriteString(suffix)
	n := len(labels) / 2
	if n == 0 && extraName == "" {
		w.w.WriteByte(' ')
		return
	}
	w.w.WriteByte('{')
	for i := 0; i < n; i++ {
		if i > 0 {
			w.w.WriteByte(',')
		}
		w.label(labels[2*i], labels[2*i+1])
	}
	if extraName != "" {
		if n > 0 {
			w.w.WriteByte(',')
		}
		w.label(extraName, extraValue)
	}
	w.w.WriteString("} ")
}

func (w *Writer) label(name, value string) {
	w.w.WriteString(name)
	w.w.WriteString(`="`)
	writeEscaped(w.w, value, true)
	w.w.WriteByte('"')
}

func (w *Writer) end() {
	w.w.Write(w.num)
	w.w.WriteByte('\n')
}

// appendFloat formats v as the format reads it: shortest exact decimal,
// and +Inf, -Inf, NaN.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// writeEscaped writes s with the escapes of the format: backslash and line
// feed always, the double quote in label values. Nothing else is escaped
// (Go's quoting would turn a tab into \t, which Prometheus' parser
// refuses). Invalid UTF-8, which the parser also refuses, becomes U+FFFD.
func writeEscaped(w *bufio.Writer, s string, quote bool) {
	if !needsEscape(s, quote) {
		w.WriteString(s)
		return
	}
	for _, r := range strings.ToValidUTF8(s, string(utf8.RuneError)) {
		switch {
		case r == '\\':
			w.WriteString(`\\`)
		case r == '\n':
			w.WriteString(`\n`)
		case r == '"' && quote:
			w.WriteString(`\"`)
		default:
			w.WriteRune(r)
		}
	}
}

// needsEscape is the fast check: most values are plain ASCII names.
func needsEscape(s string, quote bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' || c == '\n' || c >= utf8.RuneSelf || (quote && c == '"') {
			return true
		}
	}
	return false
}
