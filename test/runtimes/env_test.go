package runtimes

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/daemon/daemontest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/images"
	"github.com/coil-net/coil/internal/installcni"
	"github.com/coil-net/coil/internal/testutil"
)

const (
	nodeName = "n1"
	poolCIDR = "10.77.0.0/16"
	// nodeIP is the node's own address (on its lo, inside the node namespace): a node
	// has one, and masquerading (portmap's hostPort from 127.0.0.1) needs a global
	// address to take.
	nodeIP = "192.0.2.1"
)

// pluginsDir holds the static binaries built once by TestMain: the plugins install-cni
// copies (coil, portmap, bandwidth) and coil-testapp.
var pluginsDir string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithDir(m, "coil-runtimes-bin-", func(dir string) error {
		var pkgs []string
		for _, b := range append([]string{images.TestApp}, installcni.DefaultPlugins...) {
			pkgs = append(pkgs, images.Packages[b])
		}
		pluginsDir = dir
		return gobuild.Static(context.Background(), dir, "", pkgs...)
	}))
}

// node is one test's node: an etcd with pool "default", a node network namespace and
// an in-process coild plumbing into it, and CNI directories filled by install-cni.
type node struct {
	t        *testing.T
	log      *events.EtcdLog
	ns, path string // the node's network namespace
	sock     string
	binDir   string // the node's /opt/cni/bin
	confDir  string // the node's /etc/cni/net.d
}

func newNode(t *testing.T) *node {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ip")
	n := &node{t: t}
	e := etcdtest.Start(t)
	cli := e.Client(t)
	n.log = events.NewEtcdLog(cli, events.EtcdConfig{Prefix: "/coil/"})
	t.Cleanup(func() { _ = n.log.Close() })
	createPool(t, n.log)
	n.ns, n.path = testutil.NetNS(t, "rt")
	if out, err := exec.Command("ip", "-n", n.ns, "addr", "add", nodeIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("node address: %v: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "coil-rt-") // short: socket paths have 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	n.sock = filepath.Join(dir, "coild.sock")
	n.binDir, n.confDir = filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	for _, d := range []string{n.binDir, n.confDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	startCoild(t, daemon.Config{
		Node: nodeName, EtcdEndpoints: e.Endpoints(), Socket: n.sock, StateDir: filepath.Join(dir, "state"),
		HostNetNS: n.path, LeaseTTL: 5 * time.Second, ReconcileEvery: time.Second, DefaultPool: "default",
		Logger: testutil.Logger(t, slog.LevelInfo),
	})
	// The node's CNI directories, as coild's init container fills them: the installed
	// conflist, with the socket of this coild.
	if _, err := installcni.Install(installcni.Config{PluginsDir: pluginsDir, BinDir: n.binDir, ConfDir: n.confDir, Socket: n.sock}); err != nil {
		t.Fatal(err)
	}
	return n
}

func createPool(t *testing.T, log *events.EtcdLog) {
	t.Helper()
	sub, err := allocator.ParseSubnet(poolCIDR)
	if err != nil {
		t.Fatal(err)
	}
	admin := allocator.Admin{Log: log, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(context.Background(), &events.PoolCreated{Name: "default", BlockSizeBits: 5, Subnets: []events.Subnet{sub}}); err != nil {
		t.Fatal(err)
	}
}

func startCoild(t *testing.T, cfg daemon.Config) {
	t.Helper()
	daemontest.Start(t, cfg)
	daemontest.WaitReady(t, cfg.Socket)
}

// holding returns the addresses the log says containerID holds (nil: none).
func (n *node) holding(containerID string) []netip.Addr {
	n.t.Helper()
	var held []netip.Addr
	if _, err := n.log.Read(context.Background(), events.NodeStream(nodeName), 1, 0, func(ev *events.Event) error {
		switch p := ev.Payload.(type) {
		case *events.AddressAssigned:
			if p.ContainerID == containerID {
				held = p.Addrs
			}
		case *events.AddressReleased:
			if p.ContainerID == containerID {
				held = nil
			}
		}
		return nil
	}); err != nil {
		n.t.Fatalf("read the node stream: %v", err)
	}
	return held
}

// releases counts the AddressReleased events of containerID.
func (n *node) releases(containerID string) int {
	n.t.Helper()
	c := 0
	if _, err := n.log.Read(context.Background(), events.NodeStream(nodeName), 1, 0, func(ev *events.Event) error {
		if p, ok := ev.Payload.(*events.AddressReleased); ok && p.ContainerID == containerID {
			c++
		}
		return nil
	}); err != nil {
		n.t.Fatalf("read the node stream: %v", err)
	}
	return c
}
