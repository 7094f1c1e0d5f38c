package safetext_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/coil-net/coil/internal/safetext"
)

func TestClean(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"default/web-1", "default/web-1"},
		{"pod-ñ-日本", "pod-ñ-日本"},
		{`C:\path`, `C:\path`},
		{"\x1b[2J\x1b]0;pwned\a", `\x1b[2J\x1b]0;pwned\a`},
		{"a\tb\nc\rd", `a\tb\nc\rd`},
		{"del\x7f", `del\x7f`},
		{"c1\u0085\u009b", `c1\u0085\u009b`},
		{"evil\u202egnp.exe", `evil\u202egnp.exe`},
		{"iso\u2066late\u2069", `iso\u2066late\u2069`},
		{"zero\u200bwidth\ufeff", `zero\u200bwidth\ufeff`},
		{"line\u2028sep", `line\u2028sep`},
		{"nb\u00a0sp", `nb\u00a0sp`},
		{"bad\xff\xfeutf8", `bad\xff\xfeutf8`},
		{"\xe2\x80", `\xe2\x80`},
		{"nul\x00", `nul\x00`},
	} {
		if got := safetext.Clean(tc.in); got != tc.want {
			t.Errorf("Clean(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if safetext.Safe(tc.in) != (tc.in == tc.want) {
			t.Errorf("Safe(%q) = %v", tc.in, safetext.Safe(tc.in))
		}
	}
}

// checkClean fails if out holds anything a terminal could interpret.
func checkClean(t *testing.T, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("Clean(%q) = %q is not UTF-8", in, out)
	}
	for _, r := range out {
		if r < 0x20 || r == 0x7f || !unicode.IsPrint(r) {
			t.Fatalf("Clean(%q) = %q holds %U", in, out, r)
		}
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[31mred", "\u202e", "\xff", "a\\x1b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := safetext.Clean(s)
		checkClean(t, s, out)
		if again := safetext.Clean(out); again != out {
			t.Fatalf("Clean is not idempotent: %q -> %q -> %q", s, out, again)
		}
		if safetext.Safe(s) != (out == s) {
			t.Fatalf("Safe(%q) disagrees with Clean", s)
		}
	})
}

// TestReplaceAttr: the message, string values and errors are cleaned in both handlers.
func TestReplaceAttr(t *testing.T) {
	const evil = "web\x1b]0;owned\a\u202e1"
	for _, json := range []bool{false, true} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewTextHandler(&buf, safetext.HandlerOptions(slog.LevelInfo))
		if json {
			h = slog.NewJSONHandler(&buf, safetext.HandlerOptions(slog.LevelInfo))
		}
		slog.New(h).Warn("refused "+evil, "pod", evil, "err", errors.New("bad "+evil), "n", 3)
		out := buf.String()
		// JSON's own escapes (\u001b) would come back raw through `jq -r`.
		if strings.Contains(out, `\u001b`) || strings.Contains(out, `\u0007`) {
			t.Errorf("json=%v: log line holds an escaped control character: %q", json, out)
		}
		for _, want := range []string{`\x1b]0;owned\a`, "n=3"} {
			if json {
				want = strings.ReplaceAll(want, `\`, `\\`)
				want = strings.ReplaceAll(want, "n=3", `"n":3`)
			}
			if strings.Count(out, want) < 1 {
				t.Errorf("json=%v: %q not in %q", json, want, out)
			}
		}
		checkClean(t, evil, strings.TrimSuffix(out, "\n"))
	}
}

func TestQuote(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes
	for _, tc := range []struct{ in, want string }{
		{"blue", `"blue"`},
		{"\x1b[2J", `"\x1b[2J"`},
		{strings.Repeat("a", 70), `"` + strings.Repeat("a", 64) + `"... (70 bytes)`},
		{long, `"` + strings.Repeat("é", 32) + `"... (80 bytes)`},
	} {
		if got := safetext.Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%.20q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
