package kubelab

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cockroachdb/errors"
)

// Images are the image archives every node imports (no registry is reachable: every image
// is built locally by `make images`) and the references they carry.
type Images struct {
	// Dir holds the archives.
	Dir string
	// Files are the archive file names in Dir.
	Files []string
	// Coil is the reference of Coil's image (coild, coilctl, coil-controller,
	// install-cni and the CNI plugins), Pause the sandbox image containerd pins, Workload
	// the test workload (coil-testapp: HTTP on port 80, `coil-testapp probe`, the
	// commands critest runs).
	Coil, Pause, Workload string
	// CritestImages is critest's --test-images-file (the test image for busybox and
	// nginx).
	CritestImages string
}

// Repositories of the images `make images` builds (cmd/coil-images).
const (
	CoilRepo     = "ghcr.io/coil-net/coil"
	PauseRepo    = "localhost/coil-pause"
	WorkloadRepo = "localhost/coil-testapp"
	// WorkloadPort is the port the test workload serves HTTP on.
	WorkloadPort = 80
	// WorkloadBinary is the test workload's program in its image.
	WorkloadBinary = "/bin/coil-testapp"
)

// LoadImages reads dir/images.json, the index `make images` writes (name, digest and
// archive of each image), and finds the Coil, pause and test workload images in it.
func LoadImages(dir string) (Images, error) {
	b, err := os.ReadFile(filepath.Join(dir, "images.json"))
	if err != nil {
		return Images{}, errors.Wrapf(ErrKit, "%v (make images)", err)
	}
	var entries []struct {
		Name    string `json:"name"`
		Archive string `json:"archive"`
	}
	if err := json.Unmarshal(b, &entries); err != nil {
		return Images{}, errors.Wrapf(ErrKit, "%s: %v", filepath.Join(dir, "images.json"), err)
	}
	im := Images{Dir: dir, CritestImages: filepath.Join(dir, "critest-images.yaml")}
	for _, e := range entries {
		repo := e.Name
		if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
			repo = repo[:i]
		}
		switch repo {
		case CoilRepo:
			im.Coil = e.Name
		case PauseRepo:
			im.Pause = e.Name
		case WorkloadRepo:
			im.Workload = e.Name
		default:
			continue
		}
		im.Files = append(im.Files, filepath.Base(e.Archive))
	}
	if im.Coil == "" || im.Pause == "" || im.Workload == "" {
		return Images{}, errors.Wrapf(ErrKit, "%s lacks one of %s, %s, %s (make images)", filepath.Join(dir, "images.json"), CoilRepo, PauseRepo, WorkloadRepo)
	}
	for _, a := range im.Archives() {
		if _, err := os.Stat(a); err != nil {
			return Images{}, errors.Wrapf(ErrKit, "%v (make images)", err)
		}
	}
	return im, nil
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
