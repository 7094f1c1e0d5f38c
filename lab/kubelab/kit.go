package kubelab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/errors"
)

// Versions of the node kit (scripts/node-kit.sh builds them from test/nodekit) and of
// the Kubernetes binaries (scripts/kube-bins.sh, test/kube).
const (
	KubeVersion       = "v1.37.2"
	ContainerdVersion = "v2.4.2"
	RuncVersion       = "v1.5.3"
	CriToolsVersion   = "v1.37.0"
)

// KubeBinaries are built by `make kube-bins`; NodeBinaries by `make node-kit`.
var (
	KubeBinaries = []string{"kube-apiserver", "kubectl", "kubelet", "kube-scheduler", "kube-controller-manager"}
	NodeBinaries = []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "crictl", "critest"}
	CoilBinaries = []string{"coilctl", "etcd"}
)

// Kit is where the binaries a kubelet lab runs are.
type Kit struct {
	// KubeDir holds KubeBinaries: $COIL_KUBE_BINS, else ~/.cache/coil/kube/KubeVersion.
	KubeDir string
	// NodeDir holds NodeBinaries: $COIL_NODE_KIT, else
	// ~/.cache/coil/nodekit/containerd-V-runc-V-critools-V.
	NodeDir string
	// BinDir holds CoilBinaries (`make build`, and etcd: BuildEtcd).
	BinDir string
}

// DefaultKit is the kit `make kube-bins node-kit build` makes, with Coil's binaries in
// binDir.
func DefaultKit(binDir string) Kit {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	k := Kit{
		KubeDir: filepath.Join(home, ".cache", "coil", "kube", KubeVersion),
		NodeDir: filepath.Join(home, ".cache", "coil", "nodekit", "containerd-"+ContainerdVersion+"-runc-"+RuncVersion+"-critools-"+CriToolsVersion),
		BinDir:  binDir,
	}
	if d := os.Getenv("COIL_KUBE_BINS"); d != "" {
		k.KubeDir = d
	}
	if d := os.Getenv("COIL_NODE_KIT"); d != "" {
		k.NodeDir = d
	}
	return k
}

// Kube, Node and Bin return the path of a binary of the kit.
func (k Kit) Kube(name string) string { return filepath.Join(k.KubeDir, name) }
func (k Kit) Node(name string) string { return filepath.Join(k.NodeDir, name) }
func (k Kit) Bin(name string) string  { return filepath.Join(k.BinDir, name) }

// Check returns an error wrapping ErrKit that names every missing binary and the make
// target that builds it.
func (k Kit) Check() error { return k.check(true) }

func (k Kit) check(kube bool) error {
	var missing []string
	add := func(dir string, names []string, how string) {
		for _, n := range names {
			if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.Mode()&0o111 == 0 {
				missing = append(missing, filepath.Join(dir, n)+" ("+how+")")
			}
		}
	}
	if kube {
		add(k.KubeDir, KubeBinaries, "make kube-bins")
		add(k.BinDir, CoilBinaries, "make build")
	}
	add(k.NodeDir, NodeBinaries, "make node-kit")
	for _, tool := range []string{"nsenter", "unshare", "mount", "ip", "bird"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" (scripts/setup.sh)")
		}
	}
	if len(missing) > 0 {
		return errors.Wrapf(ErrKit, "missing: %s", strings.Join(missing, ", "))
	}
	return nil
}

// BuildEtcd builds the etcd server binary (the version the main module requires) into
// dir/etcd. The lab's control plane runs it for the API server and for Coil.
func BuildEtcd(ctx context.Context, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(dir, "etcd"), "go.etcd.io/etcd/server/v3")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return errors.Wrapf(errors.Mark(err, ErrKit), "kubelab: go build etcd: %s", b)
	}
	return nil
}
