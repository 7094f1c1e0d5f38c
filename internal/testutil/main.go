package testutil

import (
	"fmt"
	"os"
	"testing"
)

// RunWithDir is a TestMain's body for tests that need files made once per test binary
// (binaries built from the module, mostly): it makes a temporary directory every user may
// enter (0755), calls setup with it, runs the tests and removes the directory. It
// returns the exit code: 1, with the error on stderr, when the directory or setup fails.
func RunWithDir(m *testing.M, prefix string, setup func(dir string) error) int {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := setup(dir); err != nil {
		fmt.Fprintf(os.Stderr, "%+v\n", err)
		return 1
	}
	return m.Run()
}
