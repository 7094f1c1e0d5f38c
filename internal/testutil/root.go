package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// RequireRoot gates a privileged test. Without root it skips with a loud message; under
// CI (CI set in the environment) it fails instead, so CI can never pass by skipping.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("PRIVILEGED TEST NOT RUN: needs root (CI must run it as root)")
	}
	t.Skip("SKIPPED (not a pass): privileged test needs root")
}

// RequireCommand fails (under CI) or skips the test when a command is missing.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	// Tools installed by scripts/setup.sh live in .tools/bin at the repository root.
	if root, ok := RepoRoot(); ok {
		p = filepath.Join(root, ".tools", "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("TEST NOT RUN: command %s missing (run scripts/setup.sh)", name)
	}
	t.Skipf("SKIPPED (not a pass): command %s missing (run scripts/setup.sh)", name)
	return ""
}

// RepoRoot finds the repository root (the directory with go.mod) above the working directory.
func RepoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// Root is RepoRoot for a test: the repository root, or the test fails.
func Root(t testing.TB) string {
	t.Helper()
	root, ok := RepoRoot()
	if !ok {
		t.Fatal("repository root (the directory with go.mod) not found above the working directory")
	}
	return root
}

// NetNS creates a throwaway named network namespace (via `ip netns add`) and removes it
// when the test ends. It returns the name and the path (/var/run/netns/NAME).
func NetNS(t testing.TB, prefix string) (name, path string) {
	t.Helper()
	RequireRoot(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	name = "coiltest-" + prefix + "-" + hex.EncodeToString(b[:])
	if len(name) > 40 {
		name = name[:40]
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	return name, "/var/run/netns/" + name
}

// Eventually polls cond every few milliseconds until it returns true or the deadline
// passes, then fails with msg formatted with args. Use it instead of sleeps. An arg that
// is a pointer (other than one to an error or a Stringer) is read when the message is
// made, so `&last` shows the last value cond saw, not an address.
func Eventually(t testing.TB, within time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(within)
	delay := time.Millisecond
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: "+msg, append([]any{within}, deref(args)...)...)
		}
		time.Sleep(delay)
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
}

// Sanitize turns a test name into something usable in names.
func Sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, strings.ToLower(s))
}

// deref replaces each non-nil pointer among args by the value it points to, unless the
// pointer itself formats (an error or a fmt.Stringer).
func deref(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
		switch a.(type) {
		case error, fmt.Stringer:
			continue
		}
		if v := reflect.ValueOf(a); v.Kind() == reflect.Pointer && !v.IsNil() {
			out[i] = v.Elem().Interface()
		}
	}
	return out
}
