package cli

import (
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
)

// routeClientLogs sends client-go's klog lines (API discovery failures such
// as memcache.go's "Unhandled Error", warnings, retries) through meshctl's
// error stream as debug lines shown only with --verbose; klog's own
// verbosity levels (feature gates, request traces) stay off. By
// default klog would print them to the process's stderr, unformatted,
// between meshctl's own messages. It returns a function that restores
// klog's previous output.
func routeClientLogs(f *command.Factory) (restore func()) {
	s := f.Streams
	p := ui.New(s.ErrOut, s.Colour && s.ErrOutIsTerminal)
	logger := funcr.New(func(prefix, args string) {
		if !f.Verbose {
			return
		}
		line := "debug: " + args
		if prefix != "" {
			line = "debug: " + prefix + ": " + args
		}
		p.Println(p.Faint(line))
	}, funcr.Options{Verbosity: 0})
	klog.SetLoggerWithOptions(logger, klog.ContextualLogger(true))
	return func() { klog.ClearLogger() }
}
