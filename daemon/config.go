package daemon

import (
	"cmp"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
)

// Config is coild's configuration; cmd/coild fills it from flags.
type Config struct {
	Node            string
	EtcdEndpoints   []string
	EtcdCACert      string
	EtcdCert        string
	EtcdKey         string
	EtcdPrefix      string
	EmbeddedEtcdDir string // when set, start a single-member etcd serving EtcdEndpoints[0]
	Socket          string
	// AllowUIDs are the uids served on Socket besides 0 and coild's own (--allowed-uids):
	// the server checks every caller's uid (SO_PEERCRED).
	AllowUIDs     []uint32
	StateDir      string // DEL intents, the lock and the node record; default /run/coild
	ExportTable   int
	RouteProtocol int
	MetricsAddr   string // "" disables the metrics server
	DefaultPool   string
	// NodeLabels are the node's labels where there is no Kubernetes (--node-labels);
	// with Kubernetes, the Node object's labels are merged over them (labels.go).
	NodeLabels     map[string]string
	LeaseTTL       time.Duration
	ReconcileEvery time.Duration
	BlockGrace     time.Duration
	HostNetNS      string // "" = the namespace coild runs in
	// MTU of pods' veth pairs when the netconf has no "mtu"; 0 = auto, the MTU of the
	// node's default-route interface (mtu.go).
	MTU int
	// Kubeconfig is the kubeconfig file; "" means the in-cluster configuration when
	// coild runs in a pod (KUBERNETES_SERVICE_HOST set), else Kubernetes features off.
	Kubeconfig string
	// LeakGrace is how long an attachment's pod must be missing before the fresh
	// re-check that releases its address; LeakCheckInterval how often attachments are
	// checked (also soon after a pod of the node is deleted).
	LeakGrace         time.Duration
	LeakCheckInterval time.Duration
	// MetricsInterval is how often the sampled gauges (pool blocks, log lag) are updated.
	MetricsInterval time.Duration
	Logger          *slog.Logger
	// Plumber is the kernel coild plumbs pods and the export table through; nil means
	// netplumb's, on HostNetNS (what coild runs with). A given Plumber (tests: a fake)
	// is not closed by the daemon, and HostNetNS is then not used.
	Plumber Plumber

	// CrashAt names a fault-injection point where coild kills itself with SIGKILL (tests
	// only; see crash.go). Empty in production.
	CrashAt string

	// etcdViaSocket makes coild reach its embedded etcd through the served URL like any
	// other client (the baseline of the direct in-process client; benchmarks only).
	etcdViaSocket bool
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	c.EtcdPrefix = cmp.Or(c.EtcdPrefix, "/coil/")
	c.Socket = cmp.Or(c.Socket, "/run/coild.sock")
	c.StateDir = cmp.Or(c.StateDir, "/run/coild")
	c.ExportTable = cmp.Or(c.ExportTable, 119)
	c.RouteProtocol = cmp.Or(c.RouteProtocol, 30)
	c.DefaultPool = cmp.Or(c.DefaultPool, "default")
	c.LeaseTTL = cmp.Or(c.LeaseTTL, 15*time.Second)
	c.ReconcileEvery = cmp.Or(c.ReconcileEvery, 30*time.Second)
	c.BlockGrace = cmp.Or(c.BlockGrace, 5*time.Minute)
	c.LeakGrace = cmp.Or(c.LeakGrace, time.Minute)
	c.LeakCheckInterval = cmp.Or(c.LeakCheckInterval, 30*time.Second)
	c.MetricsInterval = cmp.Or(c.MetricsInterval, 10*time.Second)
	c.Logger = cmp.Or(c.Logger, slog.Default())
}

// Routing tables coild refuses as its export table: the kernel's own (unspec 0, default
// 253, main 254, local 255). The export table holds nothing but Coil's blackhole routes,
// and Coil deletes the routes of its protocol there that are not blocks: in one of these
// tables that would delete the node's own routes (docs/coild.md).
var reservedTables = map[int]string{0: "unspec", 253: "default", 254: "main", 255: "local"}

// Route protocols coild refuses: the kernel's and iproute2's (0 unspec, 1 redirect,
// 2 kernel, 3 boot: `ip route add` without proto, 4 static) mark routes Coil did not write,
// and 12 is BIRD's own.
var reservedProtocols = map[int]string{0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 12: "bird"}

// MaxLeaseTTL is etcd's largest lease TTL (9,000,000,000 s).
const MaxLeaseTTL = 9_000_000_000 * time.Second

// Validate checks the configuration as given and returns an error wrapping
// ErrInvalidConfig that names the flag, the value and the rule. It does not fill
// defaults: cmd/coild calls it on the parsed flags, so a zero or negative duration, an
// empty name or path is refused, never replaced by a default; New calls Defaults first
// (in-process callers may leave fields zero).
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return errors.Mark(errors.Newf(format, args...), ErrInvalidConfig)
	}
	if err := events.ValidName(c.Node); err != nil {
		return bad("--node: %v", err)
	}
	if len(c.EtcdEndpoints) == 0 {
		return bad("--etcd-endpoints is empty: give at least one etcd URL, like http://127.0.0.1:2379")
	}
	if err := etcdclient.CheckEndpoints(c.EtcdEndpoints); err != nil {
		return errors.Mark(errors.Wrap(err, "--etcd-endpoints"), ErrInvalidConfig)
	}
	if c.EtcdPrefix == "" || c.EtcdPrefix[0] != '/' {
		return bad("--etcd-prefix %q: must start with /", c.EtcdPrefix)
	}
	if c.Socket == "" {
		return bad("--socket is empty: give the path of the CNI socket")
	}
	if c.StateDir == "" {
		return bad("--state-dir is empty: give coild's state directory")
	}
	if name, ok := reservedTables[c.ExportTable]; ok {
		return bad("--export-table %d: that is the kernel's %s table; the export table must be a table of Coil's own (default 119), used by nothing else", c.ExportTable, name)
	}
	if c.ExportTable < 0 || c.ExportTable > 1<<31-1 {
		return bad("--export-table %d: a routing table is 1-2147483647 (not 253-255)", c.ExportTable)
	}
	if name, ok := reservedProtocols[c.RouteProtocol]; ok {
		return bad("--route-protocol %d: that protocol (%s) marks routes Coil does not write; pick one of 5-255 that nothing else on the node uses (default 30)", c.RouteProtocol, name)
	}
	if c.RouteProtocol < 0 || c.RouteProtocol > 255 {
		return bad("--route-protocol %d: a route protocol is 5-255 (not 12)", c.RouteProtocol)
	}
	if err := events.ValidName(c.DefaultPool); err != nil {
		return bad("--default-pool: %v", err)
	}
	if c.LeaseTTL < 2*time.Second || c.LeaseTTL%time.Second != 0 || c.LeaseTTL > MaxLeaseTTL {
		return bad("--lease-ttl %s: must be a whole number of seconds, at least 2s (etcd lease TTLs are whole seconds)", c.LeaseTTL)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--reconcile-interval", c.ReconcileEvery}, {"--block-grace", c.BlockGrace}, {"--leak-grace", c.LeakGrace},
		{"--leak-check-interval", c.LeakCheckInterval}, {"--metrics-interval", c.MetricsInterval},
	} {
		if d.v <= 0 {
			return bad("%s %s: must be positive", d.flag, d.v)
		}
	}
	if c.MTU != 0 {
		if err := cniproto.ValidMTU(c.MTU, false); err != nil {
			return bad("--mtu %d: %v (0, the default: the MTU of the interface of the node's default route)", c.MTU, err)
		}
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return bad("--metrics-addr %q: want HOST:PORT (or empty: no metrics endpoint): %v", c.MetricsAddr, err)
		}
	}
	if c.CrashAt != "" && !slices.Contains(CrashPoints, c.CrashAt) {
		return bad("--crash-at %q: not a crash point (%v)", c.CrashAt, CrashPoints)
	}
	return nil
}
