package gobuild

import (
	"context"
	"os"
	"os/exec"
	"strings"

	"github.com/cockroachdb/errors"
)

// Static builds every package in pkgs (full import paths of main packages, in this
// module or in one it requires, e.g. a `tool` of go.mod) into dir, each binary named
// after the last element of its path, in one `go build`: static (cgo off), with
// -trimpath and `-ldflags "-s -w" + ldflags`. The same sources and toolchain give the
// same bytes (Go's builds are reproducible; the build ID derives from the inputs).
func Static(ctx context.Context, dir string, ldflags string, pkgs ...string) error {
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", strings.TrimSpace("-s -w " + ldflags), "-o", dir + "/"}
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return errors.Wrapf(err, "go %s: %s", strings.Join(args, " "), b)
	}
	return nil
}
