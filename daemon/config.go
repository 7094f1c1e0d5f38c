package daemon

import (
	"log/slog"
	"time"
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
	StateDir        string // DEL intents and the last lease; default /run/coild
	ExportTable     int
	RouteProtocol   int
	MetricsAddr     string // "" disables the metrics server
	DefaultPool     string
	LeaseTTL        time.Duration
	ReconcileEvery  time.Duration
	BlockGrace      time.Duration
	HostNetNS       string // "" = the namespace coild runs in
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

	// CrashAt names a fault-injection point where coild kills itself with SIGKILL (tests
	// only; see crash.go). Empty in production.
	CrashAt string

	// etcdViaSocket makes coild reach its embedded etcd through the served URL like any
	// other client (the baseline of the direct in-process client; benchmarks only).
	etcdViaSocket bool
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.EtcdPrefix == "" {
		c.EtcdPrefix = "/coil/"
	}
	if c.Socket == "" {
		c.Socket = "/run/coild.sock"
	}
	if c.StateDir == "" {
		c.StateDir = "/run/coild"
	}
	if c.ExportTable == 0 {
		c.ExportTable = 119
	}
	if c.RouteProtocol == 0 {
		c.RouteProtocol = 30
	}
	if c.DefaultPool == "" {
		c.DefaultPool = "default"
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.ReconcileEvery == 0 {
		c.ReconcileEvery = 30 * time.Second
	}
	if c.BlockGrace == 0 {
		c.BlockGrace = 5 * time.Minute
	}
	if c.LeakGrace == 0 {
		c.LeakGrace = time.Minute
	}
	if c.LeakCheckInterval == 0 {
		c.LeakCheckInterval = 30 * time.Second
	}
	if c.MetricsInterval == 0 {
		c.MetricsInterval = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}
