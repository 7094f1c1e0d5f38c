package demo

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/gobuild"
	"github.com/coil-net/coil/lab"
)

// Sentinel errors of the package, checked with errors.Is.
var (
	ErrConfig   = errors.New("demo: invalid config")
	ErrNotReady = errors.New("demo: coild not ready")
	ErrCommand  = errors.New("demo: command failed")
	ErrNoPod    = errors.New("demo: no such pod")
)

// NetName is the CNI network name of the pods.
const NetName = "coilnet"

// Config describes a cluster. The zero value (with BinDir set) is a 2-node full mesh.
type Config struct {
	// Nodes is the number of nodes (default 2).
	Nodes int
	// Name is the lab name ([a-z0-9], at most 10 characters; default random). Namespaces are
	// "coillab-<Name>-...", and lab.Sweep(ctx, Name) removes what a crashed run left.
	Name string
	// BinDir holds coil, coild and coilctl. Required.
	BinDir string
	// Dir is the lab's work directory (default: a temporary one removed by Close).
	Dir string
	// RouteReflector makes node 0 a BGP route reflector instead of a full mesh.
	RouteReflector bool
	// DisableIPv6 leaves the fabric and BIRD IPv4-only.
	DisableIPv6 bool
	// Etcd, when set, starts an etcd cluster of separate member processes in the lab
	// (lab.Etcd, e.g. 3 members) that every coild uses, instead of an embedded etcd
	// served by node 0's coild.
	Etcd *lab.EtcdConfig
	// BlockGrace, ReconcileInterval and LeaseTTL are passed to every coild when non-zero.
	BlockGrace        time.Duration
	ReconcileInterval time.Duration
	LeaseTTL          time.Duration
	// CoildLogLevel is coild's --log-level (default "info").
	CoildLogLevel string
	// Logger receives progress messages (default: discard).
	Logger *slog.Logger
}

// Cluster is a running lab with coild on every node. Its methods are safe for concurrent
// use.
type Cluster struct {
	Lab *lab.Lab
	// EtcdURL is the etcd endpoint list every coild and coilctl use (comma-separated):
	// the embedded etcd's client URL (unix://...), served by node 0's coild, or the
	// members of Etcd.
	EtcdURL string
	// Etcd is the etcd cluster when Config.Etcd is set (nil otherwise).
	Etcd   *lab.Etcd
	Nodes  []*Node
	Config Config

	log     *slog.Logger
	mu      sync.Mutex
	etcdCli *clientv3.Client
	elog    *events.EtcdLog
}

// Node is a lab node running coild.
type Node struct {
	*lab.Node
	// Socket is coild's CNI socket; StateDir its --state-dir; ConfDir the CNI netconf
	// directory of the default pool.
	Socket   string
	StateDir string
	ConfDir  string

	c     *Cluster
	mu    sync.Mutex
	coild *lab.Process
	pods  map[string]*Pod
	confs map[string]string // pool -> netconf dir
}

// Pod is a pod namespace attached to the Coil network.
type Pod struct {
	Name   string // short name, unique per node
	Node   *Node
	NetNS  string // namespace name
	Path   string // /var/run/netns/NAME
	Addr   netip.Addr
	Addr6  netip.Addr // invalid without IPv6
	Result []byte     // cnitool's output (the CNI result)

	conf string // netconf directory of its ADD
}

// BuildEtcd builds the etcd server of the etcd version this module uses into dir/etcd,
// for lab.Etcd (about 15 s warm, a minute cold).
func BuildEtcd(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "etcd")
	if err := gobuild.Build(ctx, out, "go.etcd.io/etcd/server/v3", false); err != nil {
		return "", errors.Wrap(errors.Mark(err, ErrCommand), "demo")
	}
	return out, nil
}

// BuildBinaries builds coil, coild and coilctl of the module that holds the working
// directory into dir.
func BuildBinaries(ctx context.Context, dir string) error {
	for _, b := range []struct{ name, pkg string }{
		{"coil", "./cmd/coil"}, {"coild", "./cmd/coild"}, {"coilctl", "./cmd/coilctl"},
	} {
		if err := gobuild.Build(ctx, filepath.Join(dir, b.name), b.pkg, b.name == "coil"); err != nil {
			return errors.Wrap(errors.Mark(err, ErrCommand), "demo")
		}
	}
	return nil
}

// Start starts a lab with cfg.Nodes nodes and one coild per node (node 0's serves the
// embedded etcd), waits until every coild answers STATUS and every BGP session is
// Established. On error everything is torn down.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.BinDir == "" {
		return nil, errors.Wrap(ErrConfig, "BinDir is required")
	}
	for _, b := range []string{"coil", "coild", "coilctl"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, errors.Wrapf(ErrConfig, "binary %s: %v (run make build)", b, err)
		}
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 2
	}
	if cfg.CoildLogLevel == "" {
		cfg.CoildLogLevel = "info"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{Config: cfg, log: cfg.Logger}
	l, err := lab.Start(ctx, lab.Config{
		Nodes: cfg.Nodes, Name: cfg.Name, Dir: cfg.Dir, RouteReflector: cfg.RouteReflector,
		DisableIPv6: cfg.DisableIPv6, Logger: cfg.Logger,
		OnNode: func(ctx context.Context, l *lab.Lab, ln *lab.Node) error {
			c.Lab = l
			if ln.Index == 0 {
				c.EtcdURL = "unix://" + filepath.Join(l.Dir, "etcd.sock")
				if cfg.Etcd != nil {
					e, err := l.StartEtcd(ctx, *cfg.Etcd)
					if err != nil {
						return err
					}
					c.Etcd = e
					c.EtcdURL = strings.Join(e.Endpoints(), ",")
				}
			}
			n, err := c.newNode(ln)
			if err != nil {
				return err
			}
			c.Nodes = append(c.Nodes, n)
			return n.StartCoild(ctx)
		},
	})
	if err != nil {
		return nil, err
	}
	c.Lab = l
	if err := c.start(ctx); err != nil {
		return nil, lab.CloseAfter(err, c.Close)
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.Lab.WaitBGPEstablished(wctx); err != nil {
		return err
	}
	cli, err := etcdclient.New(etcdclient.Config{Endpoints: strings.Split(c.EtcdURL, ","), DialTimeout: 10 * time.Second})
	if err != nil {
		return err
	}
	c.etcdCli = cli
	c.elog = events.NewEtcdLog(cli, events.EtcdConfig{Prefix: events.DefaultPrefix})
	return nil
}

func (c *Cluster) newNode(ln *lab.Node) (*Node, error) {
	n := &Node{
		Node:     ln,
		Socket:   filepath.Join(ln.Dir, "coild.sock"),
		StateDir: filepath.Join(ln.Dir, "coild-state"),
		c:        c,
		pods:     map[string]*Pod{},
		confs:    map[string]string{},
	}
	if len(n.Socket) > 107 {
		return nil, errors.Wrapf(ErrConfig, "socket path %s too long; use a shorter Dir", n.Socket)
	}
	dir, err := n.netconf("")
	if err != nil {
		return nil, err
	}
	n.ConfDir = dir
	return n, nil
}

// netconf returns (writing it once) the netconf directory of a network on pool (""
// means coild's default pool).
func (n *Node) netconf(pool string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if d, ok := n.confs[pool]; ok {
		return d, nil
	}
	d := filepath.Join(n.Dir, "netconf")
	// The "ips" capability lets AddPodWithIPs pass runtimeConfig "ips" (cnitool's
	// CAP_ARGS); a pod added without it gets no runtimeConfig.
	conf := map[string]any{"cniVersion": "1.1.0", "name": NetName, "type": "coil", "socket": n.Socket, "timeout": "30s",
		"capabilities": map[string]bool{"ips": true}}
	if pool != "" {
		d += "-" + pool
		conf["pool"] = pool
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return "", errors.Wrap(err, "demo: netconf")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", errors.Wrap(err, "demo: netconf dir")
	}
	if err := os.WriteFile(filepath.Join(d, "10-"+NetName+".conf"), b, 0o644); err != nil {
		return "", errors.Wrap(err, "demo: write netconf")
	}
	n.confs[pool] = d
	return d, nil
}

// Close stops every coild and BIRD and removes the lab (lab.Lab.Close). Idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	elog, cli := c.elog, c.etcdCli
	c.elog, c.etcdCli = nil, nil
	c.mu.Unlock()
	if elog != nil {
		_ = elog.Close()
	}
	if cli != nil {
		_ = cli.Close()
	}
	if c.Lab == nil {
		return nil
	}
	return c.Lab.Close()
}

// Log is the event log, read through the cluster's own etcd client.
func (c *Cluster) Log() *events.EtcdLog { return c.elog }

// EtcdClient is the cluster's etcd client.
func (c *Cluster) EtcdClient() *clientv3.Client { return c.etcdCli }

// Coilctl runs bin/coilctl against the cluster's etcd and returns its stdout.
func (c *Cluster) Coilctl(ctx context.Context, args ...string) ([]byte, error) {
	args = append([]string{"--etcd-endpoints", c.EtcdURL}, args...)
	return run(ctx, filepath.Join(c.Config.BinDir, "coilctl"), args...)
}

// CreatePool creates a pool with `coilctl pool create NAME SUBNET --block-size-bits BITS`.
func (c *Cluster) CreatePool(ctx context.Context, name, subnet string, bits int) error {
	_, err := c.Coilctl(ctx, "pool", "create", name, subnet, "--block-size-bits", strconv.Itoa(bits))
	return err
}

// StartCoild starts the node's coild (node 0's with the embedded etcd) and waits until it
// answers STATUS. Starting a running coild is an error.
func (n *Node) StartCoild(ctx context.Context) error {
	if p := n.coildProc(); p != nil && !p.Exited() {
		return errors.Wrapf(ErrConfig, "coild of %s is running", n.Name)
	}
	cfg := n.c.Config
	args := []string{
		"--node", n.Name, "--etcd-endpoints", n.c.EtcdURL, "--socket", n.Socket, "--state-dir", n.StateDir,
		"--metrics-addr", "", "--log-level", cfg.CoildLogLevel,
	}
	if n.Index == 0 && cfg.Etcd == nil {
		args = append(args, "--embedded-etcd", filepath.Join(n.c.Lab.Dir, "etcd"))
	}
	if cfg.BlockGrace != 0 {
		args = append(args, "--block-grace", cfg.BlockGrace.String())
	}
	if cfg.ReconcileInterval != 0 {
		args = append(args, "--reconcile-interval", cfg.ReconcileInterval.String())
	}
	if cfg.LeaseTTL != 0 {
		args = append(args, "--lease-ttl", cfg.LeaseTTL.String())
	}
	p, err := n.StartProcess(ctx, filepath.Join(cfg.BinDir, "coild"), args...)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.coild = p
	n.mu.Unlock()
	return n.waitReady(ctx, p)
}

func (n *Node) waitReady(ctx context.Context, p *lab.Process) error {
	if err := lab.WaitCoild(ctx, p, n.Socket, 30*time.Second); err != nil {
		return errors.Mark(errors.Wrapf(err, "coild of %s: %s", n.Name, lab.Tail(p.LogPath, 20)), ErrNotReady)
	}
	return nil
}

// coildProc is the node's current coild process (nil before the first start).
func (n *Node) coildProc() *lab.Process {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.coild
}

// StopCoild stops the node's coild (SIGTERM, by PID). Pods stay as they are. Stopping a
// stopped coild is not an error.
func (n *Node) StopCoild() error {
	if p := n.coildProc(); p != nil {
		return p.Stop()
	}
	return nil
}

// KillCoild kills the node's coild with SIGKILL (by PID), as a crash would end it, and
// waits until it is gone. Pods stay as they are. Killing a stopped coild is not an error.
func (n *Node) KillCoild() error {
	if p := n.coildProc(); p != nil {
		return p.Kill()
	}
	return nil
}

// CoildPID is the PID of the node's current coild (0 before the first start).
func (n *Node) CoildPID() int {
	if p := n.coildProc(); p != nil {
		return p.PID()
	}
	return 0
}

// RestartCoild stops and starts the node's coild and waits until it is ready.
func (n *Node) RestartCoild(ctx context.Context) error {
	if err := n.StopCoild(); err != nil {
		return err
	}
	return n.StartCoild(ctx)
}

// CoildLog is the path of the current coild's log file ("" before the first start).
func (n *Node) CoildLog() string {
	if p := n.coildProc(); p != nil {
		return p.LogPath
	}
	return ""
}

// AddPod creates a pod namespace and adds it to the network through cnitool and the coil
// plugin, from coild's default pool.
func (n *Node) AddPod(ctx context.Context, name string) (*Pod, error) {
	return n.AddPodInPool(ctx, name, "")
}

// AddPodInPool is AddPod with the pool named in the network configuration ("" = coild's
// default). On failure the pod namespace is removed.
func (n *Node) AddPodInPool(ctx context.Context, name, pool string) (*Pod, error) {
	return n.addPodOrRemove(ctx, name, pool)
}

// addPodOrRemove is addPod that removes the pod (its namespace) when the ADD fails.
func (n *Node) addPodOrRemove(ctx context.Context, name, pool string, env ...string) (*Pod, error) {
	p, err := n.addPod(ctx, name, pool, env...)
	if err != nil && p != nil {
		err = errors.CombineErrors(err, n.c.Lab.RemovePodNS(n.Node, name))
		n.mu.Lock()
		delete(n.pods, name)
		n.mu.Unlock()
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// AddPodWithIPs is AddPod asking for fixed addresses through the CNI "ips" capability
// (runtimeConfig "ips", cnitool's CAP_ARGS). On failure the pod namespace is removed.
func (n *Node) AddPodWithIPs(ctx context.Context, name string, ips ...string) (*Pod, error) {
	b, err := json.Marshal(map[string][]string{"ips": ips})
	if err != nil {
		return nil, errors.Wrap(err, "demo: CAP_ARGS")
	}
	return n.addPodOrRemove(ctx, name, "", "CAP_ARGS="+string(b))
}

// TryAddPod is AddPod as a container runtime does it: when the ADD fails, the pod stays
// (its namespace too, Addr invalid) and is returned with the error, for the runtime's DEL
// (DelPod), which a runtime sends after every failed ADD. A nil pod means nothing was made.
func (n *Node) TryAddPod(ctx context.Context, name string) (*Pod, error) {
	return n.addPod(ctx, name, "")
}

func (n *Node) addPod(ctx context.Context, name, pool string, env ...string) (*Pod, error) {
	conf, err := n.netconf(pool)
	if err != nil {
		return nil, err
	}
	path, err := n.c.Lab.AddPodNS(n.Node, name)
	if err != nil {
		return nil, err
	}
	p := &Pod{Name: name, Node: n, NetNS: filepath.Base(path), Path: path, conf: conf}
	n.mu.Lock()
	n.pods[name] = p
	n.mu.Unlock()
	out, err := n.CNI(ctx, "add", conf, n.c.Config.BinDir, NetName, path,
		append([]string{"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + name}, env...)...)
	if err != nil {
		return p, errors.Wrapf(err, "demo: add pod %s on %s", name, n.Name)
	}
	p.Result = out
	if err := p.parseResult(out); err != nil {
		p.Addr, p.Addr6 = netip.Addr{}, netip.Addr{}
		return p, err
	}
	return p, nil
}

// ContainerID is the container ID cnitool gives the pod's CNI calls (derived from the
// namespace path).
func (p *Pod) ContainerID() string { return containerID(p.Path) }

// PodContainerID is the container ID the pod called name on this node gets (before it
// exists).
func (n *Node) PodContainerID(name string) string {
	return containerID(n.c.Lab.PodNSPath(n.Node, name))
}

func containerID(nsPath string) string {
	s := sha512.Sum512([]byte(nsPath))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

func (p *Pod) parseResult(out []byte) error {
	r, err := lab.ParseCNIResult(out)
	if err != nil {
		return errors.Wrap(err, "demo")
	}
	for _, a := range r.Addrs {
		if a.Is4() {
			p.Addr = a
		} else {
			p.Addr6 = a
		}
	}
	if !p.Addr.IsValid() {
		return errors.Wrapf(ErrCommand, "demo: CNI result has no IPv4 address: %s", out)
	}
	return nil
}

// DelPod deletes the pod through cnitool (DEL) and removes its namespace. Deleting an
// unknown pod is ErrNoPod.
func (n *Node) DelPod(ctx context.Context, name string) error {
	n.mu.Lock()
	p, ok := n.pods[name]
	n.mu.Unlock()
	if !ok {
		return errors.Wrapf(ErrNoPod, "%s on %s", name, n.Name)
	}
	conf := p.conf
	if conf == "" {
		conf = n.ConfDir
	}
	if _, err := n.CNI(ctx, "del", conf, n.c.Config.BinDir, NetName, p.Path,
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME="+name); err != nil {
		return errors.Wrapf(err, "demo: del pod %s on %s", name, n.Name)
	}
	if err := n.c.Lab.RemovePodNS(n.Node, name); err != nil {
		return err
	}
	n.mu.Lock()
	delete(n.pods, name)
	n.mu.Unlock()
	return nil
}

// Pods lists the node's pods, sorted by name.
func (n *Node) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	ps := make([]*Pod, 0, len(n.pods))
	for _, p := range n.pods {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *Pod) int { return strings.Compare(a.Name, b.Name) })
	return ps
}

// Ping sends count echo requests from the pod's namespace to addr (`ping -c COUNT -W 2`)
// and returns ping's output; any loss is an error marked ErrCommand.
func (p *Pod) Ping(ctx context.Context, addr netip.Addr, count int) ([]byte, error) {
	return p.Exec(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-W", "2", addr.String())
}

// Exec runs a command in the pod's namespace and returns its stdout.
func (p *Pod) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", p.NetNS, name}, args...)...)
}

// Crash takes the node out of the cluster as a crashed machine would leave it: its fabric
// link goes down first (so not even a TCP FIN reaches the peers: they notice only when
// their BGP hold timer expires), then coild and BIRD are killed with SIGKILL (by PID), and
// its pods' namespaces and its own namespace are deleted. Node 0 serves the embedded etcd
// (unless Config.Etcd) and cannot be removed then.
func (n *Node) Crash(ctx context.Context) error {
	if n.Index == 0 && n.c.Config.Etcd == nil {
		return errors.Wrap(ErrConfig, "node 0 serves the embedded etcd")
	}
	_, err := n.IP(ctx, "link", "set", n.Link, "down")
	n.mu.Lock()
	procs := []*lab.Process{n.coild, n.Bird}
	n.mu.Unlock()
	for _, p := range procs {
		if p == nil {
			continue
		}
		if !p.Exited() {
			_ = syscall.Kill(p.PID(), syscall.SIGKILL)
		}
		err = errors.CombineErrors(err, p.Stop())
	}
	for _, p := range n.Pods() {
		err = errors.CombineErrors(err, n.c.Lab.RemovePodNS(n.Node, p.Name))
	}
	n.mu.Lock()
	n.pods = map[string]*Pod{}
	n.mu.Unlock()
	if _, derr := run(ctx, "ip", "netns", "del", n.NetNS); derr != nil {
		err = errors.CombineErrors(err, derr)
	}
	return err
}

// Events reads every event of the log, ordered by commit revision.
func (c *Cluster) Events(ctx context.Context) ([]*events.Event, error) {
	streams, rev, err := c.elog.Streams(ctx, "", 0)
	if err != nil {
		return nil, err
	}
	var evs []*events.Event
	for s := range streams {
		if _, err := c.elog.Read(ctx, s, 1, rev, func(e *events.Event) error {
			evs = append(evs, e)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	slices.SortStableFunc(evs, func(a, b *events.Event) int {
		if a.Revision != b.Revision {
			return int(a.Revision - b.Revision)
		}
		return strings.Compare(string(a.Stream), string(b.Stream))
	})
	return evs, nil
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), errors.Wrapf(errors.Mark(err, ErrCommand), "demo: %s %s: %s%s",
			name, strings.Join(args, " "), strings.TrimSpace(stderr.String()), strings.TrimSpace(stdout.String()))
	}
	return stdout.Bytes(), nil
}

// BlocksFromLog returns the IPv4 blocks every node holds according to the event log
// (`coilctl block list -o json`), by node name, each list sorted.
func (c *Cluster) BlocksFromLog(ctx context.Context) (map[string][]netip.Prefix, error) {
	out, err := c.Coilctl(ctx, "block", "list", "-o", "json")
	if err != nil {
		return nil, err
	}
	var views []struct {
		Node     string   `json:"node"`
		Prefixes []string `json:"prefixes"`
	}
	if err := json.Unmarshal(out, &views); err != nil {
		return nil, errors.Wrapf(err, "demo: parse coilctl block list: %q", out)
	}
	m := map[string][]netip.Prefix{}
	for _, v := range views {
		for _, s := range v.Prefixes {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, errors.Wrapf(err, "demo: block prefix %q", s)
			}
			if p.Addr().Is4() {
				m[v.Node] = append(m[v.Node], p)
			}
		}
	}
	for _, ps := range m {
		slices.SortFunc(ps, lab.ComparePrefix)
	}
	return m, nil
}

// Converged reports whether the kernel matches the log on every node: each node exports
// exactly the blocks the log says it owns, and its BGP routes are exactly the blocks the
// other nodes own. When not, the string says what differs.
func (c *Cluster) Converged(ctx context.Context) (bool, string, error) {
	owned, err := c.BlocksFromLog(ctx)
	if err != nil {
		return false, "", err
	}
	for _, n := range c.Nodes {
		exp, err := n.ExportedBlocks(ctx)
		if err != nil {
			return false, "", err
		}
		if !slices.Equal(exp, owned[n.Name]) {
			return false, fmt.Sprintf("%s exports %v, owns %v", n.Name, exp, owned[n.Name]), nil
		}
		rs, err := n.BGPRoutes(ctx)
		if err != nil {
			return false, "", err
		}
		got := make([]netip.Prefix, 0, len(rs))
		for _, r := range rs {
			got = append(got, r.Dst)
		}
		var want []netip.Prefix
		for _, m := range c.Nodes {
			if m != n {
				want = append(want, owned[m.Name]...)
			}
		}
		slices.SortFunc(want, lab.ComparePrefix)
		if !slices.Equal(got, want) {
			return false, fmt.Sprintf("%s learnt %v, the other nodes own %v", n.Name, got, want), nil
		}
	}
	return true, "", nil
}

// WaitConverged polls Converged until it holds or within passes.
func (c *Cluster) WaitConverged(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		ok, diff, err := c.Converged(ctx)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Wrapf(ctx.Err(), "demo: routes not converged: %s", diff)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// HostVeths lists the host ends of pod veths in the node namespace (Coil names them
// "coil" + hash; the fabric link is not one), sorted.
func (n *Node) HostVeths(ctx context.Context) ([]string, error) {
	out, err := n.IP(ctx, "-j", "link", "show", "type", "veth")
	if err != nil {
		return nil, err
	}
	var links []struct {
		IfName string `json:"ifname"`
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		if err := json.Unmarshal([]byte(s), &links); err != nil {
			return nil, errors.Wrapf(err, "demo: parse ip -j link: %q", out)
		}
	}
	var names []string
	for _, l := range links {
		if strings.HasPrefix(l.IfName, "coil") {
			names = append(names, l.IfName)
		}
	}
	slices.Sort(names)
	return names, nil
}

// PodRoutes lists coild's IPv4 pod routes in the node's main table (route protocol 30,
// one /32 per pod address, via the pod's host veth), sorted.
func (n *Node) PodRoutes(ctx context.Context) ([]lab.Route, error) {
	return n.RoutesOf(ctx, 254, strconv.Itoa(lab.DefaultRouteProtocol))
}

// Attachment is an address assignment the log holds.
type Attachment struct {
	Node        string
	ContainerID string
	IfName      string
	Addrs       []netip.Addr
}

// Attachments folds every node stream of the log (read at one revision) into the
// attachments that hold addresses now, by node and container ID.
func (c *Cluster) Attachments(ctx context.Context) (map[string]map[string]Attachment, error) {
	streams, rev, err := c.elog.Streams(ctx, "node/", 0)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]Attachment{}
	for s := range streams {
		_, node, _ := strings.Cut(string(s), "/")
		held := map[string]Attachment{}
		if _, err := c.elog.Read(ctx, s, 1, rev, func(e *events.Event) error {
			switch p := e.Payload.(type) {
			case *events.AddressAssigned:
				held[p.ContainerID+"/"+p.IfName] = Attachment{Node: node, ContainerID: p.ContainerID, IfName: p.IfName, Addrs: p.Addrs}
			case *events.AddressReleased:
				delete(held, p.ContainerID+"/"+p.IfName)
			case *events.NodeRetired:
				clear(held)
			}
			return nil
		}); err != nil {
			return nil, err
		}
		byID := map[string]Attachment{}
		for _, a := range held {
			byID[a.ContainerID] = a
		}
		out[node] = byID
	}
	return out, nil
}
