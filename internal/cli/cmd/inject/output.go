package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
	transform "github.com/meshctl/mesh/internal/inject"
)

// result is one input after the transform.
type result struct {
	in      input
	out     []byte
	reports []transform.Report
}

// ReportEntry is one line of the report, as --report-format json prints it.
type ReportEntry struct {
	// Input is the file, URL or "-" the workload came from.
	Input string `json:"input"`
	transform.Report
}

// transformAll applies fn to every input; the first failure stops
// everything, so that nothing is written unless every input succeeded.
func transformAll(ins []input, fn func([]byte) ([]byte, []transform.Report, error)) ([]result, error) {
	out := make([]result, 0, len(ins))
	for _, in := range ins {
		b, reps, err := fn(in.data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.name, err)
		}
		out = append(out, result{in: in, out: b, reports: reps})
	}
	return out, nil
}

// write delivers the results: every file rewritten, or the whole stream
// written to standard output in one write, then the report on standard
// error.
func (o *IO) write(s command.Streams, results []result) error {
	if o.InPlace {
		if err := rewriteFiles(results); err != nil {
			return err
		}
	} else {
		b, err := o.stream(results)
		if err != nil {
			return err
		}
		if _, err := s.Out.Write(b); err != nil {
			return fmt.Errorf("writing the output: %w", err)
		}
	}
	return o.report(s, results)
}

// stream joins the outputs into one stream. Inputs are separated by a
// document marker unless the next one starts with its own.
func (o *IO) stream(results []result) ([]byte, error) {
	var b bytes.Buffer
	for i, r := range results {
		if i > 0 && b.Len() > 0 {
			if b.Bytes()[b.Len()-1] != '\n' {
				b.WriteByte('\n')
			}
			if !bytes.HasPrefix(r.out, []byte("---")) {
				b.WriteString("---\n")
			}
		}
		b.Write(r.out)
	}
	if o.Output == "json" {
		return toJSON(b.Bytes())
	}
	return b.Bytes(), nil
}

// toJSON renders a stream as JSON: its one object, or a List of its
// objects. Comments and formatting do not survive; that is what yaml output
// is for.
func toJSON(stream []byte) ([]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var items []json.RawMessage
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("converting to JSON: %w", err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("converting to JSON: %w", err)
		}
		if t := bytes.TrimSpace(j); len(t) == 0 || string(t) == "null" {
			continue
		}
		items = append(items, j)
	}
	var v any = map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
	if len(items) == 1 {
		v = items[0]
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("converting to JSON: %w", err)
	}
	return append(b, '\n'), nil
}

// rewriteFiles replaces every changed file atomically: each new content goes
// to a temporary file beside the original, with its mode, and only when all
// of them are written are they renamed over the originals.
func rewriteFiles(results []result) error {
	type pending struct{ tmp, path string }
	var done []pending
	cleanup := func() {
		for _, p := range done {
			os.Remove(p.tmp)
		}
	}
	for _, r := range results {
		if bytes.Equal(r.out, r.in.data) {
			continue
		}
		f, err := os.CreateTemp(filepath.Dir(r.in.path), "."+filepath.Base(r.in.path)+".meshctl-*")
		if err != nil {
			cleanup()
			return fmt.Errorf("rewriting %s: %w", r.in.path, err)
		}
		done = append(done, pending{f.Name(), r.in.path})
		_, err = f.Write(r.out)
		if err == nil {
			err = f.Chmod(r.in.mode)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			cleanup()
			return fmt.Errorf("rewriting %s: %w", r.in.path, err)
		}
	}
	for i, p := range done {
		if err := os.Rename(p.tmp, p.path); err != nil {
			for _, q := range done[i:] {
				os.Remove(q.tmp)
			}
			return fmt.Errorf("rewriting %s: %w", p.path, err)
		}
	}
	return nil
}

// report prints one line per workload on standard error, or the JSON list
// of them.
func (o *IO) report(s command.Streams, results []result) error {
	var entries []ReportEntry
	for _, r := range results {
		for _, rep := range r.reports {
			entries = append(entries, ReportEntry{Input: r.in.name, Report: rep})
		}
	}
	if o.ReportFormat == "json" {
		if entries == nil {
			entries = []ReportEntry{}
		}
		return command.PrintData(s.ErrOut, "json", entries)
	}
	p := ui.New(s.ErrOut, s.Colour && s.ErrOutIsTerminal)
	for _, e := range entries {
		line := e.Input + ": " + e.Report.String()
		switch {
		case e.Warning != "":
			p.Println(p.Warn(line))
		case e.Outcome == transform.Injected, e.Outcome == transform.Uninjected:
			p.Println(p.OK(line))
		case e.Outcome == transform.Skipped:
			p.Println(p.Warn(line))
		default:
			p.Println(p.Faint("- " + line))
		}
	}
	return nil
}
