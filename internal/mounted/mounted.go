// Package mounted tells when files mounted from a Secret or a ConfigMap
// have changed. Kubernetes updates such a volume by writing the new files
// elsewhere and swapping a symlink, so a file's (followed) identity, size
// or modification time changes with its content; comparing the three
// costs one stat per file.
package mounted

import (
	"os"
)

// Files watches a fixed list of paths. It is not safe for concurrent use:
// its owner serialises calls.
type Files struct {
	paths []string
	// good is what the files looked like at the last read that the owner
	// accepted; seen at the last Changed.
	good, seen []os.FileInfo
}

// New watches paths.
func New(paths ...string) *Files {
	return &Files{paths: paths, good: make([]os.FileInfo, len(paths)), seen: make([]os.FileInfo, len(paths))}
}

// Changed stats every file and reports whether any differs from the last
// Accept (always true before the first). An error names the file that
// could not be stat'ed.
func (f *Files) Changed() (bool, error) {
	changed := false
	for i, p := range f.paths {
		fi, err := os.Stat(p)
		if err != nil {
			return false, err
		}
		f.seen[i] = fi
		if g := f.good[i]; g == nil || !os.SameFile(g, fi) || g.Size() != fi.Size() || !g.ModTime().Equal(fi.ModTime()) {
			changed = true
		}
	}
	return changed, nil
}

// Accept records the files as Changed last saw them as read and good, so
// that a read that failed (say, between the two writes of a non-atomic
// update) is tried again at the next check.
func (f *Files) Accept() { copy(f.good, f.seen) }
