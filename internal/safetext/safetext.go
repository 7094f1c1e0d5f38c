// Package safetext makes text that came from outside safe to print on a terminal or in a
// log: pod names and annotations, event fields read from etcd (a node, an operator or an
// attacker with etcd access wrote them), error messages that quote such values.
//
// One function, Clean, is used at every output layer: coilctl's tables and its error
// line (internal/cli), the slog handlers of coild, coil-controller and coilctl
// (ReplaceAttr), and the error lines the commands print when they exit. Values are
// not checked where they are produced (the log must replay whatever it holds); they
// are made harmless where they are printed.
package safetext

import (
	"log/slog"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Clean returns s with every byte sequence that a terminal could interpret, or that
// would break a line or a table column, written as a Go escape instead:
//
//   - control characters (C0, DEL, C1), tab and newline included: `\x1b`, `\t`, `\n`,
//     `\u0085`;
//   - runes that are not printable (unicode.IsPrint): format characters such as the
//     bidirectional overrides U+202A-U+202E and U+2066-U+2069 and zero-width spaces
//     (text that displays in another order than it reads), line and paragraph
//     separators, unassigned code points, spaces other than U+0020: `\u202e`;
//   - bytes that are not UTF-8: `\xff`.
//
// Everything else, backslashes included, is kept as it is: ordinary text is unchanged,
// and Clean(Clean(s)) == Clean(s). Clean does not shorten s; callers bound what they
// print.
func Clean(s string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
		i++
	}
	if i == len(s) {
		return s // the common case: printable ASCII, no allocation
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		case r >= 0x80 && strconv.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			// QuoteRune gives 'x' with x escaped Go-style (\n, \t, \x1b, \u202e, ...).
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

const hex = "0123456789abcdef"

// Safe reports whether Clean(s) == s: s holds nothing a terminal could interpret.
func Safe(s string) bool { return Clean(s) == s }

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that passes the message, every string
// value and every error value through Clean, for the text and the JSON handler alike
// (JSON escapes control characters, but a reader that prints a field raw, `jq -r`,
// would not).
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); !Safe(s) {
			a.Value = slog.StringValue(Clean(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			a.Value = slog.StringValue(Clean(err.Error()))
		}
	}
	return a
}

// HandlerOptions returns slog handler options at level lvl with ReplaceAttr set: what
// coild, coil-controller and coilctl log through.
func HandlerOptions(lvl slog.Leveler) *slog.HandlerOptions {
	return &slog.HandlerOptions{Level: lvl, ReplaceAttr: ReplaceAttr}
}

// MaxQuoted is how many bytes of a value Quote shows.
const MaxQuoted = 64

// Quote is a value for an error message: Go-quoted (control characters escaped) and cut
// to MaxQuoted bytes with its length added, `"aaaa..."... (70000 bytes)`: a value may be
// megabytes (an annotation, a line of a file), and a message is read by people. The
// quoted form is at most 2*MaxQuoted+2 bytes (escapes such as \xff take four bytes for
// one: a value of them is cut further).
func Quote(s string) string {
	const maxOut = 2*MaxQuoted + 2
	if len(s) <= MaxQuoted {
		if q := strconv.Quote(s); len(q) <= maxOut {
			return q
		}
	}
	cut := min(len(s), MaxQuoted)
	for {
		for cut > 0 && cut < len(s) && !utf8.RuneStart(s[cut]) {
			cut--
		}
		q := strconv.Quote(s[:cut])
		if len(q) <= maxOut || cut == 0 {
			return q + "... (" + strconv.Itoa(len(s)) + " bytes)"
		}
		cut--
	}
}
