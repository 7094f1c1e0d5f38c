package kubelab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coil-net/coil/lab"
)

// Node is a kubelet node: a lab node (network namespace, BIRD) whose containerd and
// kubelet share one private mount namespace, held open by a holder process, in which the
// node has its own /run, /var/lib (so /var/lib/kubelet, /var/lib/containerd,
// /var/lib/cni), /var/log, /etc/cni/net.d and /opt/cni/bin, all directories in the node's
// work dir (/run is a tmpfs). The kernel settings the kubelet insists on writing
// (vm/overcommit_memory, kernel/panic, kernel/panic_on_oops) are files bind-mounted over
// /proc/sys there, so the host's stay as they are. containerd, the kubelet, the shims and
// every pod run in the node's cgroup "coillab-<lab>-<node>" (the kubelet's cgroupRoot;
// cgroup v1, cgroupfs driver).
type Node struct {
	*lab.Node
	// Cgroup is the node's cgroup (every process of the node is in it or below it).
	Cgroup *lab.Cgroup

	c          *Cluster
	cgProcs    string // cgroup.procs files of the "runtime" child cgroup, space-separated
	holder     *lab.Process
	mu         sync.Mutex
	containerd *lab.Process
	kubelet    *lab.Process
}

// Paths inside a node's mount namespace.
const (
	ContainerdSocket = "/run/containerd/containerd.sock"
	CNIConfDir       = "/etc/cni/net.d"
	CNIBinDir        = "/opt/cni/bin"
)

func (c *Cluster) startNode(ctx context.Context, ln *lab.Node) (*Node, error) {
	n := &Node{Node: ln, c: c}
	d := ln.Dir
	for _, sub := range []string{"varlib", "varlog", "cni-conf", "cni-bin", "sysctl"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return nil, errors.Wrap(err, "kubelab: node dir")
		}
	}
	for f, v := range map[string]string{"overcommit_memory": "1", "panic": "10", "panic_on_oops": "1"} {
		if err := os.WriteFile(filepath.Join(d, "sysctl", f), []byte(v+"\n"), 0o644); err != nil {
			return nil, errors.Wrap(err, "kubelab: sysctl file")
		}
	}
	// The mount points must exist on the host; empty directories, the standard CNI paths.
	for _, mp := range []string{CNIConfDir, CNIBinDir} {
		if err := os.MkdirAll(mp, 0o755); err != nil {
			return nil, errors.Wrapf(err, "kubelab: mount point %s", mp)
		}
	}
	cg, err := c.Lab.NewCgroup(ln.Name)
	if err != nil {
		return nil, err
	}
	n.Cgroup = cg
	procs, err := cg.Sub("runtime")
	if err != nil {
		return nil, err
	}
	n.cgProcs = strings.Join(procs, " ")
	if err := n.startHolder(ctx); err != nil {
		return nil, err
	}
	if err := n.writeConfigs(); err != nil {
		return nil, err
	}
	if err := n.StartContainerd(ctx); err != nil {
		return nil, err
	}
	for _, img := range c.Config.Images.Archives() {
		if err := n.ImportImage(ctx, img); err != nil {
			return nil, err
		}
	}
	if c.Config.RuntimeOnly {
		return n, nil
	}
	if err := n.StartKubelet(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

const holderScript = `d=$1; cg=$2
for f in $cg; do echo $$ > "$f"; done
# The host's /run/netns is a mount (ip netns makes it one, with every namespace file
# below it): detach this namespace's copy, or it would shadow the node's /run/netns in
# mountinfo and containerd would find it private (HostToContainer needs shared).
umount -l /run/netns 2>/dev/null || true
mount -t tmpfs -o mode=0755 tmpfs /run
mount --make-shared /run
mkdir -p /run/netns
mount --bind /run/netns /run/netns
mount --make-shared /run/netns
mount --bind "$d/varlib" /var/lib
mount --bind "$d/varlog" /var/log
mount --bind "$d/cni-conf" ` + CNIConfDir + `
mount --bind "$d/cni-bin" ` + CNIBinDir + `
mount --bind "$d/sysctl/overcommit_memory" /proc/sys/vm/overcommit_memory
mount --bind "$d/sysctl/panic" /proc/sys/kernel/panic
mount --bind "$d/sysctl/panic_on_oops" /proc/sys/kernel/panic_on_oops
touch "$d/mounted"
exec sleep infinity
`

// startHolder starts the process that owns the node's mount namespace and waits until its
// mounts are in place.
func (n *Node) startHolder(ctx context.Context) error {
	marker := filepath.Join(n.Dir, "mounted")
	_ = os.Remove(marker)
	p, err := n.StartCommand(ctx, "holder", []string{"nsenter", "--net=" + n.NetNSPath, "--",
		"unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", holderScript, "sh", n.Dir, n.cgProcs})
	if err != nil {
		return err
	}
	n.holder = p
	return waitFor(ctx, 10*time.Second, p, "node mount namespace of "+n.Name, func() (bool, string) {
		_, err := os.Stat(marker)
		return err == nil, "mounts not done"
	})
}

// enter is the command line prefix that runs a command in the node's network and mount
// namespaces and in its runtime cgroup.
func (n *Node) enter(argv ...string) []string {
	return append([]string{"nsenter", "-t", strconv.Itoa(n.holder.PID()), "-m", "-n", "--",
		"sh", "-c", `cg=$1; p=$2; shift 2; for f in $cg; do echo $$ > "$f"; done; PATH="$p:$PATH" exec "$@"`, "sh", n.cgProcs, n.c.Config.Kit.NodeDir},
		argv...)
}

// Exec runs a command in the node's network and mount namespaces (and its cgroup) and
// returns its stdout.
func (n *Node) Exec(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := n.enter(argv...)
	return run(ctx, nil, cmd[0], cmd[1:]...)
}

// Crictl runs crictl against the node's containerd.
func (n *Node) Crictl(ctx context.Context, args ...string) ([]byte, error) {
	return n.Exec(ctx, append([]string{n.c.Config.Kit.Node("crictl"), "--runtime-endpoint", "unix://" + ContainerdSocket, "--timeout", "30s"}, args...)...)
}

// Ctr runs ctr (namespace k8s.io) against the node's containerd.
func (n *Node) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	return n.Exec(ctx, append([]string{n.c.Config.Kit.Node("ctr"), "--address", ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
}

// ImportImage imports an image archive (OCI or docker-archive tar) into the node's
// containerd, as `ctr -n k8s.io images import` does on a real node.
func (n *Node) ImportImage(ctx context.Context, archive string) error {
	_, err := n.Ctr(ctx, "images", "import", archive)
	return err
}

func (n *Node) writeConfigs() error {
	c := n.c
	images := c.Config.Images
	ctd := fmt.Sprintf(`version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri"]

[grpc]
  address = %q

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q

[plugins."io.containerd.cri.v1.runtime"]
  # No CAP_SYS_RESOURCE here: a negative oom_score_adj fails (docs/kubernetes.md).
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = [%q]
  conf_dir = %q
  use_internal_loopback = true

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = %q
  SystemdCgroup = false
`, ContainerdSocket, images.Pause, CNIBinDir, CNIConfDir, c.Config.Kit.Node("runc"))
	if err := os.WriteFile(filepath.Join(n.Dir, "containerd.toml"), []byte(ctd), 0o644); err != nil {
		return errors.Wrap(err, "kubelab: containerd config")
	}
	kcfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%s
cgroupsPerQOS: true
enforceNodeAllocatable: []
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
makeIPTablesUtilChains: false
resolvConf: ""
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
serializeImagePulls: false
volumePluginDir: /var/lib/kubelet/volume-plugins
podLogsDir: /var/log/pods
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization:
  mode: AlwaysAllow
`, n.Cgroup.Name, ContainerdSocket, n.FabricAddr, c.pki.CAFile)
	if err := os.WriteFile(filepath.Join(n.Dir, "kubelet-config.yaml"), []byte(kcfg), 0o644); err != nil {
		return errors.Wrap(err, "kubelab: kubelet config")
	}
	if c.Config.RuntimeOnly {
		return nil
	}
	cert, key, err := c.pki.issue(certReq{name: "kubelet-" + n.Name, cn: "system:node:" + n.Name, orgs: []string{"system:nodes"}, client: true})
	if err != nil {
		return err
	}
	return c.pki.kubeconfig(filepath.Join(n.Dir, "kubelet.kubeconfig"), c.APIServer, cert, key)
}

// StartContainerd starts the node's containerd and waits until it answers.
func (n *Node) StartContainerd(ctx context.Context) error {
	p, err := n.StartCommand(ctx, "containerd", n.enter(n.c.Config.Kit.Node("containerd"), "--config", filepath.Join(n.Dir, "containerd.toml")))
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.containerd = p
	n.mu.Unlock()
	return waitFor(ctx, 30*time.Second, p, "containerd of "+n.Name, func() (bool, string) {
		_, err := n.Ctr(ctx, "version")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// StartKubelet starts the node's kubelet (it registers the node; waitRegistered).
func (n *Node) StartKubelet(ctx context.Context) error {
	if p := n.kubeletProc(); p != nil && !p.Exited() {
		return errors.Wrapf(ErrConfig, "kubelet of %s is running", n.Name)
	}
	args := []string{n.c.Config.Kit.Kube("kubelet"),
		"--config=" + filepath.Join(n.Dir, "kubelet-config.yaml"),
		"--kubeconfig=" + filepath.Join(n.Dir, "kubelet.kubeconfig"),
		"--hostname-override=" + n.Name, "--node-ip=" + n.FabricAddr.String(),
	}
	args = append(args, n.c.Config.KubeletArgs...)
	p, err := n.StartCommand(ctx, "kubelet", n.enter(args...))
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.kubelet = p
	n.mu.Unlock()
	return nil
}

// StopKubelet stops the node's kubelet (SIGTERM, by PID). Pods keep running.
func (n *Node) StopKubelet() error {
	if p := n.kubeletProc(); p != nil {
		return p.Stop()
	}
	return nil
}

// kubeletProc is the node's current kubelet process (nil before the first start).
func (n *Node) kubeletProc() *lab.Process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.kubelet
}

// KubeletLog is the current kubelet's log file.
func (n *Node) KubeletLog() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return logPath(n.kubelet)
}

// ContainerdLog is containerd's log file.
func (n *Node) ContainerdLog() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return logPath(n.containerd)
}

// logPath is p's log file ("" for no process).
func logPath(p *lab.Process) string {
	if p == nil {
		return ""
	}
	return p.LogPath
}

// Shutdown takes the node away as a powered-off machine would leave it: the kubelet
// stops, every process of the node (containerd, shims, pods, coild) is killed, and its
// BIRD stops (its BGP sessions close, so the peers drop its routes at once). The
// namespaces stay until Close.
func (n *Node) Shutdown(ctx context.Context) error {
	err := n.StopKubelet()
	for _, pid := range n.Cgroup.PIDs() {
		if pid == n.holder.PID() {
			continue
		}
		_ = killPID(pid)
	}
	if werr := waitFor(ctx, 30*time.Second, nil, "processes of "+n.Name, func() (bool, string) {
		pids := n.Cgroup.PIDs()
		if len(pids) <= 1 {
			return true, ""
		}
		for _, pid := range pids {
			if pid != n.holder.PID() {
				_ = killPID(pid)
			}
		}
		return false, fmt.Sprintf("left: %v", pids)
	}); werr != nil {
		err = errors.CombineErrors(err, werr)
	}
	if n.Bird != nil {
		err = errors.CombineErrors(err, n.Bird.Stop())
	}
	return err
}

func (n *Node) waitRegistered(ctx context.Context) error {
	cs, err := n.c.Client()
	if err != nil {
		return err
	}
	return waitFor(ctx, 90*time.Second, n.kubelet, "kubelet of "+n.Name+" registering", func() (bool, string) {
		_, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "no Node object yet; kubelet log: " + lab.Tail(n.KubeletLog(), 5)
		}
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// waitFor polls cond every 100 ms until it holds, p (if any) exits, or within passes.
func waitFor(ctx context.Context, within time.Duration, p *lab.Process, what string, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last string
	for {
		if p != nil && p.Exited() {
			return errors.Wrapf(ErrNotReady, "%s: %s exited (%v): %s", what, p.Name, p.Err(), lab.Tail(p.LogPath, 30))
		}
		ok, why := cond()
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			msg := ""
			if p != nil {
				msg = lab.Tail(p.LogPath, 30)
			}
			return errors.Wrapf(ErrNotReady, "%s: %v (last: %s) %s", what, ctx.Err(), last, msg)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Cluster is the cluster the node belongs to.
func (n *Node) Cluster() *Cluster { return n.c }
