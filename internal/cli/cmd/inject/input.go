package inject

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// fetchTimeout bounds the download of one URL.
const fetchTimeout = 30 * time.Second

// maxURLBytes bounds what one URL may return: manifests, not archives.
const maxURLBytes = 256 << 20

// input is one manifest stream, read whole before anything is transformed.
type input struct {
	// name is what messages call it: a path, a URL or "-".
	name string
	// path is set for files, which --in-place may rewrite.
	path string
	mode fs.FileMode
	data []byte
}

// IO holds what inject and uninject share: where manifests come from and
// where the results go.
type IO struct {
	Inputs       []string
	Output       string
	InPlace      bool
	ReportFormat string
	// HTTPClient fetches https URLs; tests pass one that trusts their
	// server.
	HTTPClient func() (*http.Client, error)
	// Stdin is read for the input "-".
	Stdin io.Reader
}

func (o *IO) validate() error {
	switch o.Output {
	case "yaml", "json":
	default:
		return fmt.Errorf("invalid --output %q: use yaml or json", o.Output)
	}
	switch o.ReportFormat {
	case "text", "json":
	default:
		return fmt.Errorf("invalid --report-format %q: use text or json", o.ReportFormat)
	}
	stdin := 0
	for _, in := range o.Inputs {
		if in == "-" {
			stdin++
		}
		if o.InPlace && (in == "-" || strings.Contains(in, "://")) {
			return fmt.Errorf("--in-place rewrites files: %s is not one", in)
		}
	}
	if stdin > 1 {
		return errors.New("standard input (-) can be named only once")
	}
	if o.InPlace && o.Output == "json" {
		return errors.New("--in-place keeps each file's own format: it cannot be combined with --output json")
	}
	return nil
}

// read reads every input whole: files, directories (recursively, .yaml,
// .yml and .json files in lexical order), https URLs and "-".
func (o *IO) read(ctx context.Context) ([]input, error) {
	var out []input
	for _, name := range o.Inputs {
		switch {
		case name == "-":
			b, err := io.ReadAll(o.Stdin)
			if err != nil {
				return nil, fmt.Errorf("reading standard input: %w", err)
			}
			out = append(out, input{name: "-", data: b})
		case strings.Contains(name, "://"):
			b, err := o.fetch(ctx, name)
			if err != nil {
				return nil, err
			}
			out = append(out, input{name: name, data: b})
		default:
			files, err := readPath(name)
			if err != nil {
				return nil, err
			}
			out = append(out, files...)
		}
	}
	return out, nil
}

func readPath(name string) ([]input, error) {
	st, err := os.Stat(name)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if !st.IsDir() {
		f, err := readFile(name)
		if err != nil {
			return nil, err
		}
		return []input{f}, nil
	}
	var out []input
	err = filepath.WalkDir(name, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading %s: %w", p, err)
		}
		if d.IsDir() || !manifestFile(p) {
			return nil
		}
		f, err := readFile(p)
		if err != nil {
			return err
		}
		out = append(out, f)
		return nil
	})
	return out, err
}

func manifestFile(p string) bool {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func readFile(p string) (input, error) {
	st, err := os.Stat(p)
	if err != nil {
		return input{}, fmt.Errorf("reading %s: %w", p, err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return input{}, fmt.Errorf("reading %s: %w", p, err)
	}
	return input{name: p, path: p, mode: st.Mode().Perm(), data: b}, nil
}

// fetch downloads an https URL. Plain http is refused: a manifest decides
// what runs in the cluster, and must not be open to tampering on the way.
func (o *IO) fetch(ctx context.Context, raw string) ([]byte, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", raw, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("reading %s: only https URLs are fetched, not %s", raw, u.Scheme)
	}
	client := http.DefaultClient
	if o.HTTPClient != nil {
		if client, err = o.HTTPClient(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", raw, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", raw, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", raw, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reading %s: %s", raw, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxURLBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", raw, err)
	}
	if len(b) > maxURLBytes {
		return nil, fmt.Errorf("reading %s: larger than %d MiB", raw, maxURLBytes>>20)
	}
	return b, nil
}
