package kubelab

import (
	"path/filepath"
	"syscall"
)

// Images are the image archives every node imports (no registry is reachable: every image
// is built locally, `make images`) and the references they carry.
type Images struct {
	// Dir holds the archives.
	Dir string
	// Files are the archive file names in Dir.
	Files []string
	// Coil is the reference of Coil's image (coild, coil, coilctl, coil-controller,
	// install-cni), Pause the sandbox image containerd pins, Workload the test workload.
	Coil, Pause, Workload string
}

// DefaultImages are the archives `make images` writes into dir (bin/images).
func DefaultImages(dir string) Images {
	return Images{
		Dir:      dir,
		Files:    []string{"coil.tar", "pause.tar", "workload.tar"},
		Coil:     "ghcr.io/coil-net/coil:dev",
		Pause:    "registry.k8s.io/pause:3.10",
		Workload: "ghcr.io/coil-net/workload:dev",
	}
}

// Archives returns the paths of the archives.
func (i Images) Archives() []string {
	out := make([]string, 0, len(i.Files))
	for _, f := range i.Files {
		out = append(out, filepath.Join(i.Dir, f))
	}
	return out
}

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
