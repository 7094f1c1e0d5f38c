package runtimes

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/images"
	"github.com/coil-net/coil/internal/installcni"
	"github.com/coil-net/coil/internal/testutil"
)

// containerd is a containerd daemon (Debian's 1.6) running as a node would: in the
// node's network namespace, in a private mount namespace with its own /run (containerd
// hard-codes /run/containerd/s and runc's state under /run/containerd/runc), overlays on
// /etc, /opt and /var/lib (so nothing of the host changes), and the node's CNI
// directories bind-mounted at /etc/cni/net.d and /opt/cni/bin, where `ctr run --cni`
// looks. Its ctr commands run in the same namespaces (nsenter).
type containerd struct {
	t      *testing.T
	work   string
	sock   string
	cgroup string // parent cgroup of the test's containers (removed at the end)
	cmd    *exec.Cmd
	done   chan struct{}
	logBuf *testutil.Buffer
}

// ctrNamespace is the containerd namespace of the test's containers; the CNI container
// ID ctr passes is "<namespace>-<id>".
const ctrNamespace = "coiltest"

const nodeScript = `set -e
W=$1 CONF=$2 BIN=$3
mount -t tmpfs -o mode=0755 coil-run /run
for d in etc opt var/lib; do
	n=$(echo "$d" | tr / -)
	mkdir -p "$W/$n-up" "$W/$n-work"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/$n-up,workdir=$W/$n-work" "/$d"
done
mkdir -p /etc/cni/net.d /opt/cni/bin
mount --bind "$CONF" /etc/cni/net.d
mount --bind "$BIN" /opt/cni/bin
exec containerd --config "$W/config.toml"
`

func startContainerd(t *testing.T, n *node) *containerd {
	t.Helper()
	work, err := os.MkdirTemp("", "ctd-") // short: socket paths
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	c := &containerd{t: t, work: work, sock: filepath.Join(work, "ctd.sock"), cgroup: "/coiltest-" + hex.EncodeToString(b[:]),
		done: make(chan struct{}), logBuf: &testutil.Buffer{}}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(work, "root"), filepath.Join(work, "state"), c.sock, c.sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(work, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("nsenter", "--net="+n.path, "--", "unshare", "-m", "--propagation", "private", "--",
		"sh", "-c", nodeScript, "sh", work, n.confDir, n.binDir)
	c.cmd.Stdout, c.cmd.Stderr = c.logBuf, c.logBuf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.stop)
	testutil.Eventually(t, 60*time.Second, func() bool {
		select {
		case <-c.done:
			t.Fatalf("containerd exited:\n%s", c.logBuf.String())
		default:
		}
		_, err := c.ctr(context.Background(), "version")
		return err == nil
	}, "containerd answering on %s", c.sock)
	return c
}

// ctr runs ctr in containerd's namespaces.
func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", c.ctrArgs(args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (c *containerd) ctrArgs(args ...string) []string {
	return append([]string{"-t", strconv.Itoa(c.cmd.Process.Pid), "-m", "-n", "--", "ctr", "--address", c.sock, "-n", ctrNamespace}, args...)
}

// stop removes every task and container of the test, stops containerd, ends any shim
// it left (by PID: processes whose command line names this containerd's socket) and
// removes the containers' cgroups.
func (c *containerd) stop() {
	ctx := context.Background()
	if out, err := c.ctr(ctx, "tasks", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = c.ctr(ctx, "tasks", "kill", "-s", "SIGKILL", id)
			_, _ = c.ctr(ctx, "tasks", "delete", "-f", id)
		}
	}
	if out, err := c.ctr(ctx, "containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = c.ctr(ctx, "containers", "delete", id)
		}
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(b, []byte(c.sock)) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*" + c.cgroup)
	for _, cg := range cgroups {
		kids, _ := filepath.Glob(cg + "/*/")
		for _, k := range kids {
			_ = syscall.Rmdir(k)
		}
		_ = syscall.Rmdir(cg)
	}
	if c.t.Failed() {
		c.t.Logf("containerd log:\n%s", c.logBuf.String())
	}
	_ = os.RemoveAll(c.work)
}

// run starts `ctr run --cni --rm IMAGE ID [ARGS]` in the background (not detached: ctr
// sends DEL when the task ends) and returns its process and output.
func (c *containerd) run(image, id string, args ...string) (*exec.Cmd, *testutil.Buffer, chan error) {
	out := &testutil.Buffer{}
	cmd := exec.Command("nsenter", c.ctrArgs(append([]string{"run", "--cni", "--rm", "--cgroup", c.cgroup + "/" + id, image, id}, args...)...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	return cmd, out, done
}

func wait(t *testing.T, done chan error, within time.Duration, what string, out *testutil.Buffer) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("%s did not end within %s:\n%s", what, within, out.String())
		return nil
	}
}

// Debian's containerd 1.6 (libcni 1.1) drives the plugin with `ctr run --cni` on the
// locally built test image: with the installed conflist ("cniVersion" 1.0.0, coil then
// portmap and bandwidth) the container gets an address from the pool, answers HTTP on it
// from the node, and the address is released when the task ends (ctr's DEL). A conflist
// saying "cniVersion": "1.1.0" (what deploy/ installed before) is refused by this
// runtime with "unsupported CNI result version", after coild allocated: the DEL that
// follows releases it.
func TestContainerd16CtrRun(t *testing.T) {
	for _, c := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2", "nsenter", "unshare", "iptables"} {
		testutil.RequireCommand(t, c)
	}
	n := newNode(t)
	ctd := startContainerd(t, n)
	ctx := context.Background()
	if v, err := ctd.ctr(ctx, "version"); err == nil {
		t.Logf("ctr version:\n%s", v)
	}

	// The test image, built as `make images` builds it, imported as docs/kubernetes.md says.
	spec := images.TestAppSpec("test", pluginsDir, time.Unix(0, 0))
	img, err := images.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	built, err := images.WriteArchive(filepath.Join(ctd.work, "coil-testapp.tar"), spec.Name, img, spec.Created)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := ctd.ctr(ctx, "images", "import", built.Path); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, spec.Name) {
		t.Errorf("ctr images import: %q does not name %s", out, spec.Name)
	}
	if out, err := ctd.ctr(ctx, "images", "ls"); err != nil || !strings.Contains(out, spec.Name) || !strings.Contains(out, built.Digest.String()) {
		t.Fatalf("ctr images ls: %v\n%s\nwant %s %s", err, out, spec.Name, built.Digest)
	}

	t.Run("installed conflist", func(t *testing.T) {
		const id = "web1"
		cniID := ctrNamespace + "-" + id
		_, out, done := ctd.run(spec.Name, id)
		var addr string
		testutil.Eventually(t, 60*time.Second, func() bool {
			select {
			case err := <-done:
				t.Fatalf("ctr run ended (%v):\n%s", err, out.String())
			default:
			}
			if h := n.holding(cniID); len(h) == 1 {
				addr = h[0].String()
			}
			return addr != ""
		}, "an address for %s", cniID)
		reply, err := n.probe(t, "http://"+addr+":80/")
		if err != nil {
			t.Fatalf("%v\nctr run output:\n%s", err, out.String())
		}
		if got := fmt.Sprint(reply["addrs"]); got != "["+addr+"]" {
			t.Errorf("the container answered with addresses %s, want [%s]", got, addr)
		}
		// The task ends (SIGTERM: coil-testapp stops gracefully); ctr sends DEL.
		if _, err := ctd.ctr(ctx, "tasks", "kill", "-s", "SIGTERM", id); err != nil {
			t.Fatal(err)
		}
		if err := wait(t, done, 60*time.Second, "ctr run", out); err != nil {
			t.Errorf("ctr run: %v\n%s", err, out.String())
		}
		testutil.Eventually(t, 30*time.Second, func() bool { return n.holding(cniID) == nil }, "address of %s released after ctr's DEL", cniID)
	})

	t.Run("cniVersion 1.1.0 is refused", func(t *testing.T) {
		// A conflist that sorts first: go-cni loads only the first one.
		bad := filepath.Join(n.confDir, "05-coil-110.conflist")
		conf := strings.Replace(installcni.DefaultConflist, `"cniVersion": "1.0.0",
  "cniVersions": ["1.0.0", "1.1.0"],`, `"cniVersion": "1.1.0",`, 1)
		conf = strings.Replace(conf, `"socket": "/run/coild.sock"`, `"socket": "`+n.sock+`"`, 1)
		if !strings.Contains(conf, `"cniVersion": "1.1.0",`) || strings.Contains(conf, "cniVersions") {
			t.Fatalf("could not derive the 1.1.0 conflist:\n%s", conf)
		}
		if err := os.WriteFile(bad, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = os.Remove(bad) }()
		const id = "web2"
		cniID := ctrNamespace + "-" + id
		_, out, done := ctd.run(spec.Name, id, images.TestApp, "true")
		err := wait(t, done, 60*time.Second, "ctr run", out)
		if err == nil || !strings.Contains(out.String(), `unsupported CNI result version "1.1.0"`) {
			t.Errorf("ctr run with cniVersion 1.1.0: %v, want it refused with `unsupported CNI result version \"1.1.0\"`:\n%s", err, out.String())
		}
		testutil.Eventually(t, 30*time.Second, func() bool { return n.holding(cniID) == nil && n.releases(cniID) == 1 },
			"the address coild allocated for %s released by the DEL that follows", cniID)
	})
}
