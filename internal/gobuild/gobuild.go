// Package gobuild builds the project's commands for tests, the demo and benchmarks, with
// the flags `make build` uses, so what they run is what ships.
package gobuild

import (
	"context"
	"os"
	"os/exec"
	"strings"

	"github.com/cockroachdb/errors"
)

// Module is the project's module path.
const Module = "github.com/coil-net/coil"

// Build builds the command pkg ("./cmd/coil", "cmd/coil" or a full import path in this
// module, or the import path of a command in a module this one requires, such as
// "go.etcd.io/etcd/server/v3") into out with cgo off. Stripped adds `-trimpath -ldflags
// "-s -w"`, as the Makefile builds the CNI plugin.
func Build(ctx context.Context, out, pkg string, stripped bool) error {
	path := pkg
	first, _, _ := strings.Cut(strings.TrimPrefix(path, "./"), "/")
	if !strings.HasPrefix(path, Module) && !strings.Contains(first, ".") {
		path = Module + "/" + strings.TrimPrefix(path, "./")
	}
	args := []string{"build"}
	if stripped {
		args = append(args, "-trimpath", "-ldflags", "-s -w")
	}
	args = append(args, "-o", out, path)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return errors.Wrapf(err, "go build %s: %s", path, b)
	}
	return nil
}
