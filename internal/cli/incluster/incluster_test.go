package incluster

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
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
