package annotation_test

import (
	"fmt"
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

// TestParseIPs: the annotation coil.cybozu.com/ip holds one address per family, comma
// separated; every malformed value is ErrInvalid, quoting it and saying what is wrong.
func TestParseIPs(t *testing.T) {
	for v, want := range map[string]string{
		"198.18.5.7":             "[198.18.5.7]",
		" 198.18.5.7 , fd00::7 ": "[198.18.5.7 fd00::7]",
		"fd00::7,198.18.5.7/24":  "[fd00::7 198.18.5.7]",
		"::ffff:198.18.5.7":      "[198.18.5.7]",
	} {
		ips, err := annotation.ParseIPs(v)
		if err != nil || fmt.Sprint(ips) != want {
			t.Errorf("%q: %v %v, want %s", v, ips, err, want)
		}
	}
	for v, want := range map[string]string{
		"":                        `coil.cybozu.com/ip="": cniproto: invalid fixed address ""`,
		"198.18.5.7,":             `invalid fixed address ""`,
		"198.18.5.7;fd00::7":      `invalid fixed address "198.18.5.7;fd00::7"`,
		"198.18.5.7,198.18.5.8":   "198.18.5.7 and 198.18.5.8 are of one family",
		"1.1.1.1,fd00::1,2.2.2.2": "3 addresses, at most one per family",
		"224.0.0.1":               "not a unicast address a pod may have",
		strings.Repeat("1", 300):  "longer than 256 bytes",
		"\x1b[2J198.18.5.7":       `coil.cybozu.com/ip="\x1b[2J198.18.5.7"`,
	} {
		_, err := annotation.ParseIPs(v)
		if !errors.Is(err, annotation.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: %v, want ErrInvalid saying %q", v, err, want)
		}
	}
}

// FuzzParseIPs: ParseIPs never panics, returns at most one valid address per family, and
// its errors are bounded and hold no control character.
func FuzzParseIPs(f *testing.F) {
	for _, s := range []string{"198.18.5.7", "198.18.5.7,fd00::7", "", ",", "1.1.1.1/99", "\x1b]0;x\a", strings.Repeat("1,", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		ips, err := annotation.ParseIPs(v)
		if err != nil {
			msg := err.Error()
			if !errors.Is(err, annotation.ErrInvalid) || len(msg) > 1024 || !utf8.ValidString(msg) || strings.ContainsAny(msg, "\x00\x1b\a\n\r\u202e") {
				t.Fatalf("bad error (%d bytes): %.300q", len(msg), msg)
			}
			return
		}
		if len(ips) == 0 || len(ips) > 2 || (len(ips) == 2 && ips[0].Is4() == ips[1].Is4()) {
			t.Fatalf("ParseIPs(%q) = %v", v, ips)
		}
	})
}
