package annotation_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/kube/annotation"
)

// FuzzParsePool: a pool annotation is whatever a user with rights on the pod or its
// namespace wrote (up to 256 KiB). ParsePool never panics, returns only valid pool
// names, and refuses with ErrInvalid in a message that is bounded and holds no control
// character (it reaches the CNI error and coild's log).
func FuzzParsePool(f *testing.F) {
	for _, s := range []string{"blue", " blue ", "", "Blue", "a_b", "\x1b]0;pwned\a", "pool\u202e", strings.Repeat("a", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		pool, err := annotation.ParsePool(v)
		if err != nil {
			if !errors.Is(err, annotation.ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			msg := err.Error()
			if len(msg) > 512 || !utf8.ValidString(msg) || strings.ContainsAny(msg, "\x00\x1b\a\n\r\u202e") {
				t.Fatalf("unsafe or unbounded message (%d bytes): %.300q", len(msg), msg)
			}
			return
		}
		if events.ValidName(pool) != nil || pool != strings.TrimSpace(v) {
			t.Fatalf("ParsePool(%q) = %q", v, pool)
		}
	})
}

func TestParsePool(t *testing.T) {
	if p, err := annotation.ParsePool(" blue "); err != nil || p != "blue" {
		t.Fatalf("%q %v", p, err)
	}
	_, err := annotation.ParsePool("\x1b[2J" + strings.Repeat("x", 100))
	want := `coil.cybozu.com/pool="\x1b[2Jxxxxxxxx`
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), `x"... (104 bytes): name`) {
		t.Fatalf("got %v, want %s...", err, want)
	}
}
