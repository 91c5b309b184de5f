package registry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshctl/mesh/internal/meshapi"
)

// File is the registry of local mode: a directory of YAML or JSON files
// (*.yaml, *.yml, *.json), one service with its endpoints per file, in the
// format of docs/controller.md#file-registry. The directory is read again
// every PollInterval; a file that does not parse or validate is logged and
// its last good content stays in service.
type File struct {
	Dir string
	// PollInterval defaults to one second.
	PollInterval time.Duration
	// Logger is required.
	Logger *slog.Logger

	synced atomic.Bool
	files  map[string]fileState // by path
}

var _ Registry = (*File)(nil)

// FileService is the content of one file: the Service's fields, and the
// endpoints that serve it.
type FileService struct {
	meshapi.Service `json:",inline"`
	Endpoints       []meshapi.Endpoint `json:"endpoints"`
}

type fileState struct {
	mod  time.Time
	size int64
	svc  *FileService // last good; nil if the file never parsed
}

// Synced returns nil once the directory was read once.
func (f *File) Synced() error {
	if f.synced.Load() {
		return nil
	}
	return fmt.Errorf("reading %s: not yet", f.Dir)
}

// Run reads the directory until ctx is done. A directory that cannot be
// read is logged and tried again; it is not an error.
func (f *File) Run(ctx context.Context, sink Sink) error {
	interval := f.PollInterval
	if interval <= 0 {
		interval = time.Second
	}
	em := newEmitter(sink)
	f.files = map[string]fileState{}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := f.poll(em); err != nil {
			f.Logger.Warn("reading the file registry; keeping the last good state", "dir", f.Dir, "error", err)
		} else {
			f.synced.Store(true)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (f *File) poll(em *emitter) error {
	entries, err := os.ReadDir(f.Dir)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		path := filepath.Join(f.Dir, e.Name())
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		seen[path] = true
		old, had := f.files[path]
		if had && old.mod.Equal(info.ModTime()) && old.size == info.Size() {
			continue
		}
		st := fileState{mod: info.ModTime(), size: info.Size(), svc: old.svc}
		if svc, err := ReadFileService(path); err != nil {
			f.Logger.Warn("invalid service file; keeping its last good content", "file", path, "error", err)
		} else {
			st.svc = svc
		}
		f.files[path] = st
	}
	for path := range f.files {
		if !seen[path] {
			delete(f.files, path)
		}
	}

	// Files in name order, so that when two name the same service the
	// first one wins, whatever order the directory lists them in.
	paths := make([]string, 0, len(f.files))
	for p := range f.files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	want := map[string]*FileService{}
	for _, p := range paths {
		svc := f.files[p].svc
		if svc == nil {
			continue
		}
		key := Key(svc.Namespace, svc.Name)
		if _, dup := want[key]; dup {
			f.Logger.Warn("service defined twice; using the first file", "service", key, "file", p)
			continue
		}
		want[key] = svc
	}
	for key, svc := range want {
		s := svc.Service
		em.set(key, &s, svc.Endpoints)
	}
	for _, key := range em.keys() {
		if want[key] == nil {
			em.set(key, nil, nil)
		}
	}
	return nil
}

// ReadFileService reads and validates one file of the file registry.
func ReadFileService(path string) (*FileService, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var svc FileService
	if err := yaml.UnmarshalStrict(b, &svc); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	if svc.Addresses == nil {
		svc.Addresses = []string{}
	}
	if svc.Ports == nil {
		svc.Ports = []meshapi.ServicePort{}
	}
	if svc.Endpoints == nil {
		svc.Endpoints = []meshapi.Endpoint{}
	}
	if err := svc.Service.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	eps := meshapi.Endpoints{Endpoints: svc.Endpoints}
	if err := eps.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, e := range svc.Endpoints {
		for name := range e.Ports {
			if !slices.ContainsFunc(svc.Ports, func(p meshapi.ServicePort) bool { return p.Name == name }) {
				return nil, fmt.Errorf("%s: endpoint %s: port %q is not a port of the service", path, e.Address, name)
			}
		}
	}
	SortEndpoints(svc.Endpoints)
	return &svc, nil
}
