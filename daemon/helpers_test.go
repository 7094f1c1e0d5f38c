package daemon_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/daemon/daemontest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/netplumb"
)

const nodeName = "n1"

// binDir holds the coil plugin (built in TestMain) and coild (built on first use).
var binDir string

var (
	coildOnce sync.Once
	coildErr  error
)

func TestMain(m *testing.M) {
	code := testutil.RunWithDir(m, "coild-test-bin-", func(dir string) error {
		binDir = dir
		return goBuild(filepath.Join(dir, "coil"), "github.com/coil-net/coil/cmd/coil")
	})
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func goBuild(out, pkg string) error {
	return gobuild.Build(context.Background(), out, pkg, false)
}

// coildBin builds cmd/coild once per test binary.
func coildBin(t *testing.T) string {
	t.Helper()
	coildOnce.Do(func() { coildErr = goBuild(filepath.Join(binDir, "coild"), "github.com/coil-net/coil/cmd/coild") })
	if coildErr != nil {
		t.Fatal(coildErr)
	}
	return filepath.Join(binDir, "coild")
}

// env is one test's world: an etcd, a node namespace (or a fake kernel), a socket and a
// state dir.
type env struct {
	t        *testing.T
	etcd     *etcdtest.Cluster
	cli      *clientv3.Client
	log      *events.EtcdLog
	nodeNS   string // name
	nodePath string
	// fake is the kernel of a newFakeEnv (nil: the real one, in nodeNS).
	fake     *fakePlumber
	sockDir  string
	sock     string
	stateDir string
}

// newEnv is a world with the real kernel: coild plumbs a throwaway node namespace
// (root).
func newEnv(t *testing.T) *env {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "ip")
	e := newBaseEnv(t)
	e.nodeNS, e.nodePath = testutil.NetNS(t, "node")
	return e
}

// newServingEnv is newEnv with the default pool and an in-process coild serving it with
// e.config(), ready.
func newServingEnv(t *testing.T) *env {
	t.Helper()
	return newServingEnvWith(t, nil)
}

// newServingEnvWith is newServingEnv with e.config() changed by edit first.
func newServingEnvWith(t *testing.T, edit func(*daemon.Config)) *env {
	t.Helper()
	e := newEnv(t)
	e.defaultPool()
	cfg := e.config()
	if edit != nil {
		edit(&cfg)
	}
	e.startDaemon(cfg)
	return e
}

// newFakeEnv is a world whose kernel is a fakePlumber: no root, no namespace.
func newFakeEnv(t *testing.T) *env {
	t.Helper()
	e := newBaseEnv(t)
	e.fake = newFakePlumber()
	return e
}

func newBaseEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t}
	e.etcd = etcdtest.Start(t)
	e.cli = e.etcd.Client(t)
	e.log = events.NewEtcdLog(e.cli, events.EtcdConfig{Prefix: "/coil/"})
	t.Cleanup(func() { _ = e.log.Close() })
	// Socket paths are limited to 107 bytes; t.TempDir() can be long.
	dir, err := os.MkdirTemp("", "coild-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	e.sockDir = dir
	e.sock = filepath.Join(dir, "coild.sock")
	e.stateDir = filepath.Join(t.TempDir(), "state")
	return e
}

func (e *env) createPool(name string, bits uint8, subnets ...string) {
	e.t.Helper()
	var subs []events.Subnet
	for _, s := range subnets {
		sub, err := allocator.ParseSubnet(s)
		if err != nil {
			e.t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	admin := allocator.Admin{Log: e.log, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(context.Background(), &events.PoolCreated{Name: name, BlockSizeBits: bits, Subnets: subs}); err != nil {
		e.t.Fatalf("create pool %s: %v", name, err)
	}
}

func (e *env) config() daemon.Config {
	cfg := daemon.Config{
		Node:           nodeName,
		EtcdEndpoints:  e.etcd.Endpoints(),
		Socket:         e.sock,
		StateDir:       e.stateDir,
		HostNetNS:      e.nodePath,
		LeaseTTL:       3 * time.Second,
		ReconcileEvery: 200 * time.Millisecond,
		Logger:         testutil.Logger(e.t, slog.LevelInfo),
	}
	if e.fake != nil {
		cfg.Plumber = e.fake
	}
	return cfg
}

// startDaemon runs coild in-process until stopped or the test ends, and waits until it
// is ready.
func (e *env) startDaemon(cfg daemon.Config) *daemontest.Coild {
	e.t.Helper()
	r := e.startDaemonNoWait(cfg)
	e.waitReady()
	return r
}

// startDaemonNoWait runs coild in-process without waiting for it to be ready.
func (e *env) startDaemonNoWait(cfg daemon.Config) *daemontest.Coild {
	e.t.Helper()
	return daemontest.Start(e.t, cfg)
}

// delIntents lists the DELs coild recorded and has not finished (its state dir's del/).
func (e *env) delIntents() []os.DirEntry {
	ents, _ := os.ReadDir(filepath.Join(e.stateDir, "del"))
	return ents
}

// waitDelsFinished waits until coild has finished every DEL it recorded.
func (e *env) waitDelsFinished() {
	e.t.Helper()
	waitFor(e.t, func() bool { return len(e.delIntents()) == 0 }, "DELs finished")
}

// waitReady waits until coild answers STATUS with success.
func (e *env) waitReady() {
	e.t.Helper()
	daemontest.WaitReady(e.t, e.sock)
}

// pod makes a pod namespace and returns its name and path.
func (e *env) pod(prefix string) (string, string) {
	e.t.Helper()
	return testutil.NetNS(e.t, prefix)
}

// ---- libcni ----

func (e *env) netList() *libcni.NetworkConfigList {
	e.t.Helper()
	return e.netListWith("")
}

func (e *env) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{binDir}, e.t.TempDir(), nil)
}

// addPods makes a pod namespace for each id and ADDs it through c, failing the test on
// the first error. It returns the namespaces' paths by id.
func (e *env) addPods(c *libcni.CNIConfig, list *libcni.NetworkConfigList, ids ...string) map[string]string {
	e.t.Helper()
	paths := map[string]string{}
	for _, id := range ids {
		_, path := e.pod(id)
		paths[id] = path
		if _, err := c.AddNetworkList(context.Background(), list, podRT(id, path)); err != nil {
			e.t.Fatalf("ADD %s: %v", id, err)
		}
	}
	return paths
}

func podRT(id, netnsPath string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id, NetNS: netnsPath, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web-" + id}},
	}
}

// cniCode returns the CNI error code and text of err; it fails when err is not a CNI error.
func cniCode(t *testing.T, err error) (uint, string) {
	t.Helper()
	if err == nil {
		t.Fatal("want a CNI error, got success")
	}
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("not a CNI error: %T %v", err, err)
	}
	return e.Code, e.Error()
}

// ---- kernel state, read with ip(8) ----

func ipJSON(t *testing.T, out any, args ...string) {
	t.Helper()
	b, err := exec.Command("ip", args...).Output()
	if err != nil {
		var stderr string
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		b = []byte("[]")
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, b)
	}
}

// veths lists the veth names in namespace ns.
func veths(t *testing.T, ns string) []string {
	t.Helper()
	var links []struct {
		IfName string `json:"ifname"`
	}
	ipJSON(t, &links, "-n", ns, "-j", "link", "show", "type", "veth")
	var out []string
	for _, l := range links {
		out = append(out, l.IfName)
	}
	sort.Strings(out)
	return out
}

type ipRoute struct {
	Dst      string `json:"dst"`
	Dev      string `json:"dev"`
	Gateway  string `json:"gateway"`
	Type     string `json:"type"`
	Protocol string `json:"protocol"`
}

// routes lists IPv4 and IPv6 routes of ns with extra selectors (e.g. "table", "119").
func routes(t *testing.T, ns string, sel ...string) []ipRoute {
	t.Helper()
	var all []ipRoute
	for _, fam := range []string{"-4", "-6"} {
		var rs []ipRoute
		ipJSON(t, &rs, append([]string{"-n", ns, "-j", fam, "route", "show"}, sel...)...)
		all = append(all, rs...)
	}
	return all
}

// coilHostRoutes lists the main-table routes of protocol 30 (the pods' /32 and /128).
func coilHostRoutes(t *testing.T, ns string) []string {
	t.Helper()
	var out []string
	for _, r := range routes(t, ns, "proto", "30") {
		out = append(out, r.Dst+" dev "+r.Dev)
	}
	sort.Strings(out)
	return out
}

// table lists the destinations in a routing table of ns.
func table(t *testing.T, ns string, id int) []string {
	t.Helper()
	var out []string
	for _, r := range routes(t, ns, "table", fmt.Sprint(id)) {
		out = append(out, r.Type+" "+r.Dst)
	}
	sort.Strings(out)
	return out
}

// podAddrs lists the global addresses on eth0 in a pod namespace.
func podAddrs(t *testing.T, ns string) []string {
	t.Helper()
	var ifs []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	ipJSON(t, &ifs, "-n", ns, "-j", "addr", "show", "dev", "eth0")
	var out []string
	for _, i := range ifs {
		for _, a := range i.AddrInfo {
			if a.Scope == "global" {
				out = append(out, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
			}
		}
	}
	sort.Strings(out)
	return out
}

// ---- the log ----

type attachKey struct{ ContainerID, IfName string }

// nodeEvents reads the node's stream.
func (e *env) nodeEvents() []*events.Event {
	e.t.Helper()
	var out []*events.Event
	if _, err := e.log.Read(context.Background(), events.NodeStream(nodeName), 1, 0, func(ev *events.Event) error {
		out = append(out, ev)
		return nil
	}); err != nil {
		e.t.Fatalf("read node stream: %v", err)
	}
	return out
}

// held folds the node stream into the attachments that hold addresses.
func (e *env) held() map[attachKey][]netip.Addr {
	e.t.Helper()
	out := map[attachKey][]netip.Addr{}
	for _, ev := range e.nodeEvents() {
		switch p := ev.Payload.(type) {
		case *events.AddressAssigned:
			out[attachKey{p.ContainerID, p.IfName}] = p.Addrs
		case *events.AddressReleased:
			delete(out, attachKey{p.ContainerID, p.IfName})
		case *events.Snapshot:
			e.t.Fatalf("snapshot in the node stream: the test's fold does not read snapshots")
		}
	}
	return out
}

// released returns the AddressReleased events of an attachment.
func (e *env) released(containerID string) []*events.AddressReleased {
	var out []*events.AddressReleased
	for _, ev := range e.nodeEvents() {
		if p, ok := ev.Payload.(*events.AddressReleased); ok && p.ContainerID == containerID {
			out = append(out, p)
		}
	}
	return out
}

// nodeBlocks folds a pool stream into the indexes of the blocks the node owns.
func (e *env) nodeBlocks(pool string) []uint64 {
	e.t.Helper()
	owned := map[uint64]bool{}
	if _, err := e.log.Read(context.Background(), events.PoolStream(pool), 1, 0, func(ev *events.Event) error {
		switch p := ev.Payload.(type) {
		case *events.BlockAssigned:
			if p.Node == nodeName {
				owned[p.Index] = true
			}
		case *events.BlockReleased:
			delete(owned, p.Index)
		case *events.BlockReclaimed:
			delete(owned, p.Index)
		}
		return nil
	}); err != nil {
		e.t.Fatalf("read pool stream: %v", err)
	}
	var out []uint64
	for i := range owned {
		out = append(out, i)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// blockRoutes is what table 119 must hold for blocks of a dual-stack pool whose single
// subnet is v4,v6 with blocks of 2^bits addresses.
func blockRoutes(v4, v6 string, bits int, idx []uint64) []string {
	p4, p6 := netip.MustParsePrefix(v4), netip.MustParsePrefix(v6)
	var out []string
	for _, i := range idx {
		a4 := p4.Addr().As4()
		n := uint32(a4[0])<<24 | uint32(a4[1])<<16 | uint32(a4[2])<<8 | uint32(a4[3])
		n += uint32(i) << bits
		b4 := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
		out = append(out, "blackhole "+netip.PrefixFrom(b4, 32-bits).String())
		a6 := p6.Addr().As16()
		binary.BigEndian.PutUint64(a6[8:], binary.BigEndian.Uint64(a6[8:])+i<<bits)
		out = append(out, "blackhole "+netip.PrefixFrom(netip.AddrFrom16(a6), 128-bits).String())
	}
	sort.Strings(out)
	return out
}

func hostVeth(containerID string) string { return netplumb.HostVethName(containerID, "eth0") }

// expectNoLeak fails unless containerID has no veth in the node namespace, no held
// address and no /32 route.
func (e *env) expectNoLeak(containerID string) {
	e.t.Helper()
	v := hostVeth(containerID)
	for _, name := range veths(e.t, e.nodeNS) {
		if name == v {
			e.t.Errorf("veth %s of %s leaked", v, containerID)
		}
	}
	for _, r := range coilHostRoutes(e.t, e.nodeNS) {
		if strings.HasSuffix(r, " dev "+v) {
			e.t.Errorf("route %s of %s leaked", r, containerID)
		}
	}
	if a, ok := e.held()[attachKey{containerID, "eth0"}]; ok {
		e.t.Errorf("%s still holds %v", containerID, a)
	}
}

func join(s []string) string { return strings.Join(s, " | ") }

// waitFor waits (generously) for cond.
func waitFor(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, cond, msg)
}
