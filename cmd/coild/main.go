// Command coild is Coil's node daemon. See docs/coild.md.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/safetext"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// maxUID is the largest uid: (uid_t)-1 = 4294967295 means "no uid" to the kernel.
const maxUID = 1<<32 - 2

// uids checks --allowed-uids values.
func uids(in []uint) ([]uint32, error) {
	out := make([]uint32, 0, len(in))
	for _, u := range in {
		if u > maxUID {
			return nil, fmt.Errorf("--allowed-uids %d: not a uid (at most %d)", u, uint64(maxUID))
		}
		out = append(out, uint32(u))
	}
	return out, nil
}

func run(args []string) int {
	var (
		cfg        daemon.Config
		etcd       etcdclient.Flags
		logLevel   string
		logJSON    bool
		allowUIDs  []uint
		nodeLabels string
	)
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "coild",
		Short: "Coil node daemon: allocates pod addresses from the event log, plumbs pods, exports block routes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			opts := safetext.HandlerOptions(lvl) // escapes terminal controls in pod names and errors
			var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
			if logJSON {
				h = slog.NewJSONHandler(os.Stderr, opts)
			}
			cfg.Logger = slog.New(h)
			ec, err := etcd.Config(0)
			if err != nil {
				return fmt.Errorf("--etcd-endpoints: %w", err)
			}
			cfg.EtcdEndpoints, cfg.EtcdCACert, cfg.EtcdCert, cfg.EtcdKey = ec.Endpoints, ec.CACert, ec.Cert, ec.Key
			cfg.EtcdPrefix = etcd.Prefix
			if cfg.AllowUIDs, err = uids(allowUIDs); err != nil {
				return err
			}
			if cfg.NodeLabels, err = allocator.ParseNodeLabels(nodeLabels); err != nil {
				return fmt.Errorf("--node-labels: %w", err)
			}
			// Every value as given: a zero or negative duration, an empty name, a reserved
			// table is refused here, before daemon.New fills defaults for in-process callers.
			if err = cfg.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			d, err := daemon.New(ctx, cfg)
			if err != nil {
				return err
			}
			defer d.Close()
			return d.Run(ctx)
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Node, "node", host, "this node's name (default: the hostname)")
	etcd.Register(f)
	f.StringVar(&cfg.EmbeddedEtcdDir, "embedded-etcd", "", "start a single-member etcd in-process with its data in DIR, serving the first --etcd-endpoints URL")
	f.StringVar(&cfg.Socket, "socket", "/run/coild.sock", "UNIX socket the CNI plugin talks to (created mode 0600)")
	f.UintSliceVar(&allowUIDs, "allowed-uids", nil, "uids served on --socket besides 0 and coild's own (comma-separated or repeated); any other caller is refused")
	f.StringVar(&cfg.StateDir, "state-dir", "/run/coild", "directory for DEL intents and the last lease ID")
	f.IntVar(&cfg.ExportTable, "export-table", 119, "routing table holding one route per block of this node, for BIRD")
	f.IntVar(&cfg.RouteProtocol, "route-protocol", 30, "route protocol number marking Coil's routes")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:9384", "address of the Prometheus metrics endpoint (empty: off)")
	f.StringVar(&cfg.DefaultPool, "default-pool", "default", "pool used when the request names none")
	f.StringVar(&nodeLabels, "node-labels", "", "this node's labels, KEY=VALUE,... (for pools with a node selector; with Kubernetes the Node object's labels win over these on the same key)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", 15*time.Second, "TTL of the node's etcd lease (fencing)")
	f.DurationVar(&cfg.ReconcileEvery, "reconcile-interval", 30*time.Second, "how often the kernel is reconciled with the log")
	f.DurationVar(&cfg.BlockGrace, "block-grace", 5*time.Minute, "how long an empty block stays before it is released")
	f.IntVar(&cfg.MTU, "mtu", 0, "MTU of pods' interfaces (both veth ends) when the network config has no \"mtu\"; 0: the MTU of the interface of the node's default route")
	f.StringVar(&cfg.HostNetNS, "host-netns", "", "path of the node network namespace (default: coild's own)")
	f.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig file for the Kubernetes API (empty: in-cluster config when run in a pod, else Kubernetes features off)")
	f.DurationVar(&cfg.LeakGrace, "leak-grace", time.Minute, "how long an attachment's pod must be gone before its address is re-checked and released (Kubernetes)")
	f.DurationVar(&cfg.LeakCheckInterval, "leak-check-interval", 30*time.Second, "how often attachments are checked for deleted pods (Kubernetes; also soon after a pod is deleted)")
	f.DurationVar(&cfg.MetricsInterval, "metrics-interval", 10*time.Second, "how often the sampled gauges (pool blocks, log lag) are updated")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&logJSON, "log-json", false, "log JSON lines instead of text")
	f.StringVar(&cfg.CrashAt, "crash-at", "", "fault injection for tests: SIGKILL self at this point")
	_ = f.MarkHidden("crash-at")
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "coild: %v\n", err)
		return 1
	}
	return 0
}
