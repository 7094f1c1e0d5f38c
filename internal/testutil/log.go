package testutil

import (
	"log/slog"
	"strings"
	"testing"
)

// LogWriter sends what is written to it to t.Log (shown for a failed test and with -v),
// one call a write, without the trailing newline: for a slog handler or a command's
// output.
type LogWriter struct{ T testing.TB }

func (w LogWriter) Write(b []byte) (int, error) {
	w.T.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// Logger is a text logger writing to tb.Log from level up.
func Logger(tb testing.TB, level slog.Level) *slog.Logger {
	tb.Helper()
	return slog.New(slog.NewTextHandler(LogWriter{tb}, &slog.HandlerOptions{Level: level}))
}
