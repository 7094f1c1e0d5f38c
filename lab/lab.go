package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
)

// Prefix starts the name of every network namespace a lab creates
// ("coillab-<lab name>-<node>"), so leftovers are recognisable and Sweep never touches
// anything else.
const Prefix = "coillab-"

// Defaults of Config.
const (
	DefaultNodes         = 2
	DefaultExportTable   = 119
	DefaultRouteProtocol = 30
	DefaultASN           = 64512
)

var (
	// DefaultFabric4 is the IPv4 fabric subnet; node i gets host address i+1. It exists only
	// inside the lab's namespaces.
	DefaultFabric4 = netip.MustParsePrefix("10.255.0.0/24")
	// DefaultFabric6 is the IPv6 fabric subnet (ULA), node i gets host address i+1.
	DefaultFabric6 = netip.MustParsePrefix("fd00:255::/64")
)

// Sentinel errors of the package, checked with errors.Is.
var (
	ErrConfig   = errors.New("lab: invalid config")
	ErrCommand  = errors.New("lab: command failed")
	ErrClosed   = errors.New("lab: closed")
	ErrNotReady = errors.New("lab: BGP not established")
)

// Config describes a lab. The zero value is a valid 2-node full-mesh lab.
type Config struct {
	// Nodes is the number of nodes (default 2). Tested up to 5; at most 200.
	Nodes int
	// Name is a short unique name ([a-z0-9], at most 10 characters) used in namespace names
	// (default random). Two live labs must not share a name.
	Name string
	// Dir is the work directory (BIRD configs, sockets, logs, CNI state). Default: a new
	// temporary directory removed by Close. A given Dir is kept (handy for reading logs).
	Dir string
	// RouteReflector makes node 0 a route reflector that every other node peers with,
	// instead of a full iBGP mesh.
	RouteReflector bool
	// ExportTable is the kernel table BIRD learns block routes from (default 119).
	ExportTable int
	// RouteProtocol is the route protocol number of block routes (default 30). BIRD ignores
	// routes of any other protocol in ExportTable.
	RouteProtocol int
	// ASN is the private AS number all nodes share (default 64512).
	ASN uint32
	// DisableIPv6 runs BIRD without IPv6 channels and leaves the fabric IPv4-only.
	DisableIPv6 bool
	// OnNode, if set, runs for every node after its namespace and BIRD are started, in node
	// order. It is the hook for starting coild (with Node.StartProcess) or for any other
	// per-node set-up. An error aborts Start (and everything is torn down).
	OnNode func(ctx context.Context, l *Lab, n *Node) error
	// Logger receives progress messages (default: discard).
	Logger *slog.Logger
}

// Fabric is the shared L2 segment: a bridge in its own namespace.
type Fabric struct {
	NetNS     string       // namespace name
	NetNSPath string       // /var/run/netns/NAME
	Bridge    string       // bridge name inside NetNS
	Prefix4   netip.Prefix // IPv4 subnet of the fabric
	Prefix6   netip.Prefix // IPv6 subnet of the fabric (invalid when IPv6 is disabled)
}

// Lab is a running test bed. Its methods are safe for concurrent use.
type Lab struct {
	Name   string
	Dir    string
	Nodes  []*Node
	Fabric Fabric
	Config Config

	log        *slog.Logger
	ownDir     bool
	ownerFile  string
	mu         sync.Mutex
	namespaces []string   // created, in creation order
	procs      []*Process // started, in start order
	cgroups    []*Cgroup  // created by NewCgroup
	closed     bool
	closeErr   error
}

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,10}$`)

func (c *Config) defaults() error {
	if c.Nodes == 0 {
		c.Nodes = DefaultNodes
	}
	if c.Nodes < 1 || c.Nodes > 200 {
		return errors.Wrapf(ErrConfig, "nodes %d out of range 1..200", c.Nodes)
	}
	if c.Name == "" {
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.Name = hex.EncodeToString(b[:])
	}
	if !nameRE.MatchString(c.Name) {
		return errors.Wrapf(ErrConfig, "name %q must match %s", c.Name, nameRE)
	}
	if c.ExportTable == 0 {
		c.ExportTable = DefaultExportTable
	}
	if c.RouteProtocol == 0 {
		c.RouteProtocol = DefaultRouteProtocol
	}
	if c.RouteProtocol == 12 || c.RouteProtocol < 0 || c.RouteProtocol > 255 {
		return errors.Wrapf(ErrConfig, "route protocol %d (12 is BIRD's own)", c.RouteProtocol)
	}
	if c.ExportTable <= 0 || c.ExportTable == 254 || c.ExportTable == 255 {
		return errors.Wrapf(ErrConfig, "export table %d", c.ExportTable)
	}
	if c.ASN == 0 {
		c.ASN = DefaultASN
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Start creates the lab: the fabric, cfg.Nodes node namespaces with their veths and
// addresses, one BIRD per node, then runs cfg.OnNode for each node. It does not wait for
// BGP; call WaitBGPEstablished. On error everything Start made is torn down before it
// returns. ctx bounds Start only, not the life of the lab (see Close).
func Start(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	l := &Lab{
		Name:   cfg.Name,
		Config: cfg,
		log:    cfg.Logger.With("lab", cfg.Name),
		Fabric: Fabric{
			NetNS:   Prefix + cfg.Name + "-f",
			Bridge:  "br0",
			Prefix4: DefaultFabric4,
		},
	}
	l.Fabric.NetNSPath = nsPath(l.Fabric.NetNS)
	if !cfg.DisableIPv6 {
		l.Fabric.Prefix6 = DefaultFabric6
	}
	if err := l.start(ctx); err != nil {
		return nil, CloseAfter(err, l.Close)
	}
	return l, nil
}

// CloseAfter closes what failed to start: it returns err, with closeFn's error as a
// secondary error when closing fails too.
func CloseAfter(err error, closeFn func() error) error {
	if cerr := closeFn(); cerr != nil {
		return errors.WithSecondaryError(err, cerr)
	}
	return err
}

func (l *Lab) start(ctx context.Context) error {
	cfg := l.Config
	// The owner record comes first: Sweep removes the work directory of a lab without one.
	if err := l.writeOwner(); err != nil {
		return err
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", Prefix+cfg.Name+"-")
		if err != nil {
			return errors.Wrap(err, "lab: work dir")
		}
		l.Dir, l.ownDir = d, true
	} else {
		if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
			return errors.Wrap(err, "lab: work dir")
		}
		l.Dir = cfg.Dir
	}
	// Fabric: a bridge in its own namespace.
	if err := l.addNetNS(ctx, l.Fabric.NetNS); err != nil {
		return err
	}
	if err := l.ipBatch(ctx, l.Fabric.NetNS,
		"link add br0 type bridge",
		"link set br0 up",
	); err != nil {
		return errors.Wrap(err, "lab: fabric bridge")
	}
	for i := 0; i < cfg.Nodes; i++ {
		n, err := l.addNode(ctx, i)
		if err != nil {
			return err
		}
		l.Nodes = append(l.Nodes, n)
	}
	for _, n := range l.Nodes {
		if err := l.startBird(ctx, n); err != nil {
			return err
		}
	}
	if cfg.OnNode != nil {
		for _, n := range l.Nodes {
			if err := cfg.OnNode(ctx, l, n); err != nil {
				return errors.Wrapf(err, "lab: OnNode hook for %s", n.Name)
			}
		}
	}
	l.log.Info("lab started", "nodes", len(l.Nodes), "dir", l.Dir, "rr", cfg.RouteReflector)
	return nil
}

func (l *Lab) addNode(ctx context.Context, i int) (*Node, error) {
	name := fmt.Sprintf("n%d", i)
	n := &Node{
		Name:     name,
		Index:    i,
		NetNS:    Prefix + l.Name + "-" + name,
		Link:     "fab0",
		Dir:      filepath.Join(l.Dir, name),
		lab:      l,
		hostAddr: i + 1,
	}
	n.NetNSPath = nsPath(n.NetNS)
	n.FabricAddr = nthAddr(l.Fabric.Prefix4, i+1)
	if l.Fabric.Prefix6.IsValid() {
		n.FabricAddr6 = nthAddr(l.Fabric.Prefix6, i+1)
	}
	n.BirdSock = filepath.Join(n.Dir, "bird.ctl")
	n.BirdConf = filepath.Join(n.Dir, "bird.conf")
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return nil, errors.Wrap(err, "lab: node dir")
	}
	if err := l.addNetNS(ctx, n.NetNS); err != nil {
		return nil, err
	}
	// Forwarding on; no DAD, so IPv6 addresses (link-local included) are usable at once.
	sysctls := []string{"-q", "-w", "net.ipv4.ip_forward=1"}
	if n.FabricAddr6.IsValid() {
		sysctls = append(sysctls, "net.ipv6.conf.all.forwarding=1",
			"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	if _, err := n.Exec(ctx, "sysctl", sysctls...); err != nil {
		return nil, err
	}
	// The veth is created inside the node namespace with its peer sent straight to the
	// fabric namespace: the root namespace never sees it.
	cmds := []string{
		fmt.Sprintf("link add %s type veth peer name %s netns %s", n.Link, name, l.Fabric.NetNS),
		fmt.Sprintf("addr add %s/%d dev %s", n.FabricAddr, l.Fabric.Prefix4.Bits(), n.Link),
	}
	if n.FabricAddr6.IsValid() {
		cmds = append(cmds, fmt.Sprintf("addr add %s/%d dev %s nodad", n.FabricAddr6, l.Fabric.Prefix6.Bits(), n.Link))
	}
	cmds = append(cmds, "link set "+n.Link+" up")
	if err := l.ipBatch(ctx, n.NetNS, cmds...); err != nil {
		return nil, errors.Wrapf(err, "lab: plumb node %s", name)
	}
	if err := l.ipBatch(ctx, l.Fabric.NetNS, fmt.Sprintf("link set %s master br0 up", name)); err != nil {
		return nil, errors.Wrapf(err, "lab: attach node %s", name)
	}
	return n, nil
}

// addNetNS creates a namespace, records it for teardown and brings lo up.
func (l *Lab) addNetNS(ctx context.Context, name string) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.mu.Unlock()
	if _, err := run(ctx, nil, "ip", "netns", "add", name); err != nil {
		return err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, name)
	l.mu.Unlock()
	return l.ipBatch(ctx, name, "link set lo up")
}

// ipBatch runs ip commands inside namespace ns in one ip process.
func (l *Lab) ipBatch(ctx context.Context, ns string, cmds ...string) error {
	_, err := run(ctx, strings.NewReader(strings.Join(cmds, "\n")+"\n"), "ip", "-n", ns, "-batch", "-")
	return err
}

// Close stops every process the lab started (SIGTERM, then SIGKILL after 5 s), kills what
// is left in the cgroups it made (NewCgroup) and removes them, removes every
// namespace it created (which removes their links) and its owner record, and removes the
// work directory if Start created it. It is idempotent: later calls return the first
// call's result. It is safe to call on a partly started lab.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.closeErr
	}
	l.closed = true
	procs := append([]*Process(nil), l.procs...)
	nss := append([]string(nil), l.namespaces...)
	cgs := append([]*Cgroup(nil), l.cgroups...)
	l.mu.Unlock()

	var err error
	for i := len(procs) - 1; i >= 0; i-- {
		if perr := procs[i].Stop(); perr != nil {
			err = errors.CombineErrors(err, perr)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// What is left in the nodes' cgroups (pods, shims) dies before its namespaces go.
	for _, cg := range cgs {
		if cerr := cg.remove(ctx); cerr != nil {
			err = errors.CombineErrors(err, cerr)
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if _, nerr := run(ctx, nil, "ip", "netns", "del", nss[i]); nerr != nil && nsExists(nss[i]) {
			err = errors.CombineErrors(err, nerr)
		}
	}
	if l.ownerFile != "" {
		if rerr := os.Remove(l.ownerFile); rerr != nil && !os.IsNotExist(rerr) {
			err = errors.CombineErrors(err, errors.Wrap(rerr, "lab: owner record"))
		}
	}
	if l.ownDir && l.Dir != "" {
		if rerr := os.RemoveAll(l.Dir); rerr != nil {
			err = errors.CombineErrors(err, errors.Wrap(rerr, "lab: work dir"))
		}
	}
	l.log.Info("lab closed", "err", err)
	l.mu.Lock()
	l.closeErr = err
	l.mu.Unlock()
	return err
}

// Namespaces lists the namespaces the lab has created and not yet removed.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	return append([]string(nil), l.namespaces...)
}

// AddPodNS creates a pod network namespace named "coillab-<lab>-<node>-<name>" with lo up,
// removed at Close, and returns its path (/var/run/netns/NAME) for CNI. name must be
// [a-z0-9-], at most 20 characters; creating the same pod twice is an error.
func (l *Lab) AddPodNS(node *Node, name string) (string, error) {
	if !podNameRE.MatchString(name) {
		return "", errors.Wrapf(ErrConfig, "pod name %q must match %s", name, podNameRE)
	}
	ns := Prefix + l.Name + "-" + node.Name + "-" + name
	if err := l.addNetNS(context.Background(), ns); err != nil {
		return "", err
	}
	return nsPath(ns), nil
}

// PodNSPath is the path AddPodNS gives the pod namespace called name on node.
func (l *Lab) PodNSPath(node *Node, name string) string {
	return nsPath(Prefix + l.Name + "-" + node.Name + "-" + name)
}

// RemovePodNS deletes a pod namespace made by AddPodNS (its veth goes with it). Removing a
// pod that does not exist is not an error.
func (l *Lab) RemovePodNS(node *Node, name string) error {
	ns := Prefix + l.Name + "-" + node.Name + "-" + name
	l.mu.Lock()
	for i, s := range l.namespaces {
		if s == ns {
			l.namespaces = append(l.namespaces[:i], l.namespaces[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	if !nsExists(ns) {
		return nil
	}
	_, err := run(context.Background(), nil, "ip", "netns", "del", ns)
	return err
}

var podNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

func (l *Lab) track(p *Process) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.procs = append(l.procs, p)
	return nil
}

func nsPath(name string) string { return "/var/run/netns/" + name }

func nsExists(name string) bool {
	_, err := os.Stat(nsPath(name))
	return err == nil
}

// nthAddr returns the i-th address of prefix p (i counted from the network address).
func nthAddr(p netip.Prefix, i int) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	carry := i
	for j := len(a) - 1; j >= 0 && carry > 0; j-- {
		s := int(a[j]) + carry
		a[j] = byte(s)
		carry = s >> 8
	}
	addr, _ := netip.AddrFromSlice(a)
	return addr
}

// run executes a command, returning stdout; a failure wraps ErrCommand with stderr.
func run(ctx context.Context, stdin *strings.Reader, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), errors.Wrapf(errors.Mark(err, ErrCommand), "lab: %s %s: %s",
			name, strings.Join(args, " "), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
