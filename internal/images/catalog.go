package images

import (
	"io/fs"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/coil-net/coil/internal/installcni"
)

// Image repositories (names without the tag). docs/kubernetes.md lists them.
const (
	// CoilRepo is the image deploy/ runs (coild, the install-cni init container and
	// coil-controller); `kustomize edit set image ghcr.io/coil-net/coil=...` changes it.
	CoilRepo = "ghcr.io/coil-net/coil"
	// PauseRepo is the pod sandbox ("pause") image for nodes that cannot pull one (the
	// lab, CI): containerd's sandbox image.
	PauseRepo = "localhost/coil-pause"
	// TestAppRepo is the test workload: an HTTP server that answers with its pod's
	// addresses and host name, a prober, and the few commands critest runs in its
	// containers.
	TestAppRepo = "localhost/coil-testapp"
)

// Where things are in the coil image.
const (
	// BinDir holds coild, coilctl, coil-controller and install-cni.
	BinDir = "/usr/local/bin"
	// PluginsDir holds the CNI plugins install-cni copies to the host: coil, portmap,
	// bandwidth.
	PluginsDir = installcni.DefaultPluginsDir
)

// Binary names, as `go build -o DIR/` names them: the last element of the package path.
var (
	// CoilCommands go to BinDir of the coil image.
	CoilCommands = []string{"coild", "coilctl", "coil-controller", "install-cni"}
	// CNIPlugins go to PluginsDir of the coil image.
	CNIPlugins = installcni.DefaultPlugins
	// Pause is the pause image's only file, as /pause.
	Pause = "coil-pause"
	// TestApp is the test workload, as /bin/coil-testapp.
	TestApp = "coil-testapp"
	// TestAppApplets are the links in the test image's /bin to TestApp, which acts as
	// the command it is called as (cmd/coil-testapp, docs/kubernetes.md).
	TestAppApplets = []string{"cat", "echo", "hostname", "ls", "sleep", "top", "true"}
)

// Packages are the main packages whose binaries the images hold, by binary name.
var Packages = map[string]string{
	"coild":           "github.com/coil-net/coil/cmd/coild",
	"coil":            "github.com/coil-net/coil/cmd/coil",
	"coilctl":         "github.com/coil-net/coil/cmd/coilctl",
	"coil-controller": "github.com/coil-net/coil/cmd/coil-controller",
	"install-cni":     "github.com/coil-net/coil/cmd/install-cni",
	"coil-pause":      "github.com/coil-net/coil/cmd/coil-pause",
	"coil-testapp":    "github.com/coil-net/coil/cmd/coil-testapp",
	// The chained plugins of the installed conflist, containernetworking/plugins at the
	// version go.mod pins (the `tool` directives).
	"portmap":   "github.com/containernetworking/plugins/plugins/meta/portmap",
	"bandwidth": "github.com/containernetworking/plugins/plugins/meta/bandwidth",
}

func labels(title, version, description string) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       title,
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.description": description,
		"org.opencontainers.image.source":      "https://github.com/coil-net/coil",
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// CoilSpec is the coil image: the daemons, the operator CLI, install-cni and the CNI
// plugins, taken from binDir. It has no shell and no base image; /tmp exists (1777).
func CoilSpec(tag, binDir string, created time.Time) Spec {
	files := []File{{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777}}
	for _, c := range CoilCommands {
		files = append(files, File{Path: BinDir + "/" + c, Mode: 0o755, Source: filepath.Join(binDir, c)})
	}
	for _, p := range CNIPlugins {
		files = append(files, File{Path: PluginsDir + "/" + p, Mode: 0o755, Source: filepath.Join(binDir, p)})
	}
	return Spec{
		Name:    CoilRepo + ":" + tag,
		Files:   files,
		Env:     []string{"PATH=" + BinDir},
		Created: created,
		Labels:  labels("coil", tag, "Coil: coild, coil-controller, coilctl, install-cni and the coil, portmap and bandwidth CNI plugins"),
	}
}

// PauseSpec is the sandbox image: /pause, run as 65535:65535 like Kubernetes' own.
func PauseSpec(tag, binDir string, created time.Time) Spec {
	return Spec{
		Name:       PauseRepo + ":" + tag,
		Files:      []File{{Path: "/pause", Mode: 0o755, Source: filepath.Join(binDir, Pause)}},
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
		Created:    created,
		Labels:     labels("coil-pause", tag, "Pod sandbox: sleeps until SIGTERM or SIGINT, reaps children as PID 1"),
	}
}

// TestAppSpec is the test workload image. Its default command serves HTTP on port 80
// (`coil-testapp serve`); /bin has the applets critest runs.
func TestAppSpec(tag, binDir string, created time.Time) Spec {
	files := []File{
		{Path: "/bin/" + TestApp, Mode: 0o755, Source: filepath.Join(binDir, TestApp)},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "/etc", Mode: fs.ModeDir | 0o755},
	}
	for _, a := range TestAppApplets {
		files = append(files, File{Path: "/bin/" + a, Mode: fs.ModeSymlink | 0o777, Link: TestApp})
	}
	return Spec{
		Name:       TestAppRepo + ":" + tag,
		Files:      files,
		Entrypoint: []string{"/bin/" + TestApp},
		Cmd:        []string{"serve"},
		Env:        []string{"PATH=/bin"},
		Created:    created,
		Labels:     labels("coil-testapp", tag, "Coil's test workload: HTTP server answering with its pod's addresses, a prober, critest's commands"),
	}
}

// Specs are the three images for a tag and a directory of built binaries.
func Specs(tag, binDir string, created time.Time) []Spec {
	return []Spec{CoilSpec(tag, binDir, created), PauseSpec(tag, binDir, created), TestAppSpec(tag, binDir, created)}
}

// ArchiveName is the archive file name of an image: the last element of its
// repository + ".tar" ("coil.tar", "coil-pause.tar", "coil-testapp.tar").
func ArchiveName(image string) string {
	repo := image
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo = repo[:i]
	}
	return path.Base(repo) + ".tar"
}

// Binaries lists the binaries (names in Packages) the images of specs need.
func Binaries(specs []Spec, binDir string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range specs {
		for _, f := range s.Files {
			if f.Source != "" && filepath.Dir(f.Source) == filepath.Clean(binDir) {
				if b := filepath.Base(f.Source); !seen[b] {
					seen[b] = true
					out = append(out, b)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}
