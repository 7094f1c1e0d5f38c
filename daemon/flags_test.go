package daemon_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// TestAllowedUIDsRefused: a --allowed-uids value that is not a uid stops coild before it
// touches anything (exit 1), naming the flag and the value; never a default.
func TestAllowedUIDsRefused(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"4294967295", "--allowed-uids 4294967295: not a uid (at most 4294967294)"},
		{"-1", `invalid argument "-1" for "--allowed-uids" flag`},
		{"1000,bob", `invalid argument "1000,bob" for "--allowed-uids" flag`},
		{"", `invalid argument "" for "--allowed-uids" flag`},
	} {
		expectFlagRefused(t, "allowed-uids", tc.value, tc.want)
	}
}

// TestNodeLabelsRefused: a --node-labels value that is not KEY=VALUE,... with
// Kubernetes' label rules stops coild before it touches anything (exit 1).
func TestNodeLabelsRefused(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"zone", `--node-labels: node label "zone": want KEY=VALUE`},
		{"zone=a,zone=b", `--node-labels: node label "zone" given twice`},
		{"bad key=a", `--node-labels: node labels "bad key=a": `},
		{"zone=a/b", `--node-labels: node labels "zone=a/b": `},
	} {
		expectFlagRefused(t, "node-labels", tc.value, tc.want)
	}
}

// expectFlagRefused runs coild with --flag=value (its socket and etcd out of reach) and
// fails the test unless coild exits 1 with want in its output.
func expectFlagRefused(t *testing.T, flag, value, want string) {
	t.Helper()
	cmd := exec.Command(coildBin(t), "--"+flag+"="+value, "--socket=/nonexistent/dir/coild.sock",
		"--etcd-endpoints=unix:///nonexistent/etcd.sock")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("--%s=%q: %v, want exit 1\n%s", flag, value, err, out)
		return
	}
	if !strings.Contains(string(out), want) {
		t.Errorf("--%s=%q: output %q lacks %q", flag, value, out, want)
	}
}
