package fleet

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/safeattach/safeattach/internal/testenv"
)

// hostileText is what a pod's author or its JVM's user can write: a
// clipboard write (OSC 52), an 8-bit CSI (C1), DEL and broken UTF-8.
const hostileText = "svc\x1b]52;c;aGk=\x07\u009b2J\x7f\xff"

// TestLogEscapesWhatTheLogHandlersPass (the way back): slog's text
// handler quotes every control character, but its JSON handler — the
// daemon's — escapes only C0 controls and writes C1 controls and DEL as
// they are. What the daemon logs from a pod or a target is escaped
// first, and reaches the log printable through either handler.
func TestLogEscapesWhatTheLogHandlersPass(t *testing.T) {
	for _, h := range []struct {
		name     string
		new      func(io.Writer) slog.Handler
		passesC1 bool
	}{
		{"text", func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) }, false},
		{"json", func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) }, true},
	} {
		var raw, escaped bytes.Buffer
		slog.New(h.new(&raw)).Warn("annotation refused", "value", hostileText, "err", errors.New(hostileText))
		if got := testenv.HasControl(raw.String()); got != h.passesC1 {
			t.Errorf("slog's %s handler left controls: %v, want %v: %q", h.name, got, h.passesC1, raw.String())
		}
		slog.New(h.new(&escaped)).Warn("annotation refused", "value", logValue(hostileText), "err", logText(errors.New(hostileText)))
		if testenv.HasControl(escaped.String()) || !strings.Contains(escaped.String(), `\u009b2J`) {
			t.Errorf("%s handler, escaped values: %q", h.name, escaped.String())
		}
	}
}
