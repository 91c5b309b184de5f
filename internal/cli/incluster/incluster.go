// Package incluster holds what the two binaries that run in the cluster,
// meshproxy and meshcontroller, share on their command line: the standard
// streams, the --log-level and --log-format flags and the version command.
//
// It imports cobra and pflag and nothing from k8s.io: meshproxy links it, and
// the sidecar must stay small (see internal/cli/meshproxy's dependency test).
package incluster

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/pflag"
)

// Streams are the standard streams a command reads and writes; tests pass
// buffers.
type Streams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// Logging holds the values of --log-level and --log-format.
type Logging struct {
	Level  string
	Format string
}

// AddFlags binds --log-level and --log-format to l, with the defaults both
// binaries document (info, json). levelHelp is the help text of --log-level,
// which the proxy extends with its run-time switch.
func (l *Logging) AddFlags(f *pflag.FlagSet, levelHelp string) {
	f.StringVar(&l.Level, "log-level", "info", levelHelp)
	f.StringVar(&l.Format, "log-format", "json", "log format on stderr: json or text")
}

// Handler returns the slog handler writing to w in l.Format, and the level
// it logs at: a LevelVar, so that a caller may change it while running (the
// proxy's POST /logging).
func (l Logging) Handler(w io.Writer) (slog.Handler, *slog.LevelVar, error) {
	level := new(slog.LevelVar)
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, nil, fmt.Errorf("reading --log-level: %q is not one of debug, info, warn, error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationsAsText}
	switch l.Format {
	case "json":
		return slog.NewJSONHandler(w, opts), level, nil
	case "text":
		return slog.NewTextHandler(w, opts), level, nil
	default:
		return nil, nil, fmt.Errorf("reading --log-format: %q is not one of json, text", l.Format)
	}
}

// durationsAsText logs durations as Go duration strings ("5s") rather than
// the JSON handler's nanoseconds, so that people read them as they wrote
// them in flags and configuration.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}
