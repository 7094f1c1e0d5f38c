package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/safetext"
	"github.com/coil-net/coil/kube"
)

type options struct {
	kubeconfig                                string
	etcd                                      etcdclient.Flags
	leaseNamespace, leaseName, identity       string
	leaseDuration, renewDeadline, retryPeriod time.Duration
	retryInterval                             time.Duration
	metricsAddr, logLevel                     string
	logJSON                                   bool
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var o options
	host, _ := os.Hostname()
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = "kube-system"
	}
	cmd := &cobra.Command{
		Use:   "coil-controller",
		Short: "Coil controller: reclaims deleted Kubernetes nodes' blocks once their lease is gone (leader-elected)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return serve(ctx, o)
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	o.etcd.Register(f)
	f.StringVar(&o.leaseNamespace, "leader-election-namespace", ns, "namespace of the leader-election Lease (default: $POD_NAMESPACE, else kube-system)")
	f.StringVar(&o.leaseName, "leader-election-name", "coil-controller", "name of the leader-election Lease")
	f.StringVar(&o.identity, "identity", host+"_"+strconv.Itoa(os.Getpid()), "this candidate's identity in the Lease")
	f.DurationVar(&o.leaseDuration, "leader-election-lease-duration", 15*time.Second, "how long a leader's Lease lasts without renewal")
	f.DurationVar(&o.renewDeadline, "leader-election-renew-deadline", 10*time.Second, "how long the leader keeps trying to renew before it steps down")
	f.DurationVar(&o.retryPeriod, "leader-election-retry-period", 2*time.Second, "how often candidates try to acquire or renew the Lease")
	f.DurationVar(&o.retryInterval, "reclaim-retry-interval", 10*time.Second, "how long to wait before retrying a reclaim refused because the node's lease still lives")
	f.StringVar(&o.metricsAddr, "metrics-addr", "127.0.0.1:9386", "address of the Prometheus metrics endpoint (empty: off)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&o.logJSON, "log-json", false, "log JSON lines instead of text")
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "coil-controller: %v\n", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, o options) error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	hopts := safetext.HandlerOptions(lvl) // escapes terminal controls in pod names and errors
	var h slog.Handler = slog.NewTextHandler(os.Stderr, hopts)
	if o.logJSON {
		h = slog.NewJSONHandler(os.Stderr, hopts)
	}
	log := slog.New(h)
	// Before anything else: an empty list or entry is an error, never the default.
	ecfg, err := o.etcd.Config(10 * time.Second)
	if err != nil {
		return fmt.Errorf("--etcd-endpoints: %w", err)
	}
	rc, err := kube.RESTConfig(o.kubeconfig)
	if errors.Is(err, kube.ErrDisabled) {
		return errors.New("no --kubeconfig and not running in a pod: coil-controller needs the Kubernetes API")
	}
	if err != nil {
		return err
	}
	cs, err := kube.NewClient(rc, "coil-controller")
	if err != nil {
		return err
	}
	cli, err := etcdclient.New(ecfg)
	if err != nil {
		return err
	}
	defer func() { _ = cli.Close() }()
	elog := events.NewEtcdLog(cli, events.EtcdConfig{Prefix: o.etcd.Prefix, Logger: log})
	defer func() { _ = elog.Close() }()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rec := kube.NewNodeReclaimer(kube.ReclaimerConfig{
		Client: cs, Admin: &allocator.Admin{Log: elog, Live: elog, Clock: events.SystemClock{}, Actor: "coil-controller"},
		Prefix: o.etcd.Prefix, RetryEvery: o.retryInterval, Registerer: reg, Logger: log,
	})
	if o.metricsAddr != "" {
		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		srv := &http.Server{Handler: metricsMux(reg), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer func() { _ = srv.Close() }()
	}
	log.Info("coil-controller starting", "server", rc.Host, "lease", o.leaseNamespace+"/"+o.leaseName, "identity", o.identity)
	return kube.RunLeader(ctx, kube.LeaderConfig{
		Client: cs, Namespace: o.leaseNamespace, Name: o.leaseName, Identity: o.identity,
		LeaseDuration: o.leaseDuration, RenewDeadline: o.renewDeadline, RetryPeriod: o.retryPeriod,
		Registerer: reg, Logger: log,
	}, func(lctx context.Context) {
		// Keep reclaiming while leading; a failed start (etcd unreachable) is retried.
		for lctx.Err() == nil {
			if err := rec.Run(lctx); err != nil {
				log.Error("node reclaimer", "err", err)
			}
			select {
			case <-lctx.Done():
			case <-time.After(o.retryInterval):
			}
		}
	})
}

func metricsMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return mux
}
