package incluster

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLoggingHandler(t *testing.T) {
	var buf bytes.Buffer
	h, level, err := Logging{Level: "warn", Format: "text"}.Handler(&buf)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)
	log.Info("hidden")
	level.Set(slog.LevelInfo) // what the proxy's POST /logging does
	log.Info("shown")
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "msg=shown") {
		t.Errorf("logged %q", got)
	}
	if h.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("debug enabled at info")
	}
	if h, _, _ := (Logging{Level: "info", Format: "json"}).Handler(&buf); h == nil {
		t.Error("no handler for json")
	}

	for _, tt := range []struct {
		l    Logging
		want string
	}{
		{Logging{Level: "verbose", Format: "json"}, `reading --log-level: "verbose" is not one of debug, info, warn, error`},
		{Logging{Level: "info", Format: "xml"}, `reading --log-format: "xml" is not one of json, text`},
	} {
		if _, _, err := tt.l.Handler(&buf); err == nil || err.Error() != tt.want {
			t.Errorf("%+v: error %v, want %q", tt.l, err, tt.want)
		}
	}
}

// Durations read as they are written in flags ("20s"), not as the JSON
// handler's nanoseconds.
func TestLoggingDurations(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var buf bytes.Buffer
		h, _, err := Logging{Level: "info", Format: format}.Handler(&buf)
		if err != nil {
			t.Fatal(err)
		}
		slog.New(h).Info("draining", "timeout", 20*time.Second, slog.Group("limits", "idle", 1500*time.Millisecond))
		got := buf.String()
		if !strings.Contains(got, "20s") || !strings.Contains(got, "1.5s") || strings.Contains(got, "20000000000") {
			t.Errorf("%s: %q", format, got)
		}
	}
}
