package kube

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderConfig configures leader election on a coordination.k8s.io Lease.
type LeaderConfig struct {
	Client    kubernetes.Interface
	Namespace string // the Lease's namespace
	Name      string // the Lease's name (default "coil-controller")
	Identity  string // this candidate (e.g. the pod name); must be unique
	// LeaseDuration, RenewDeadline, RetryPeriod: client-go's timings (defaults 15 s,
	// 10 s, 2 s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Registerer receives coil_controller_leader (nil: not registered).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// RunLeader campaigns for the Lease and runs lead while this candidate leads; lead's
// context is cancelled when leadership is lost. After a loss it campaigns again. It
// returns when ctx ends, releasing the Lease if it holds it.
func RunLeader(ctx context.Context, cfg LeaderConfig, lead func(ctx context.Context)) error {
	cfg.Name = cmp.Or(cfg.Name, "coil-controller")
	if cfg.Identity == "" || cfg.Namespace == "" {
		return errors.New("kube: leader election needs a namespace and an identity")
	}
	cfg.LeaseDuration = cmp.Or(cfg.LeaseDuration, 15*time.Second)
	cfg.RenewDeadline = cmp.Or(cfg.RenewDeadline, 10*time.Second)
	cfg.RetryPeriod = cmp.Or(cfg.RetryPeriod, 2*time.Second)
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	leader := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "coil_controller_leader", Help: "1 while this coil-controller holds the leader Lease, else 0.",
	})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(leader)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaFor(cfg.Namespace, cfg.Name),
		Client:     cfg.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: cfg.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod,
			ReleaseOnCancel: true, Name: cfg.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					leader.Set(1)
					cfg.Logger.Info("leading", "lease", cfg.Namespace+"/"+cfg.Name, "identity", cfg.Identity)
					lead(lctx)
				},
				OnStoppedLeading: func() {
					leader.Set(0)
					cfg.Logger.Info("not leading", "lease", cfg.Namespace+"/"+cfg.Name, "identity", cfg.Identity)
				},
			},
		})
		if err != nil {
			return errors.Wrap(err, "leader election")
		}
		le.Run(ctx)
	}
	return nil
}

func metaFor(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}
