package kube

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
)

// ReclaimReason is recorded in the NodeRetired and BlockReclaimed events the node
// reclaimer appends.
const ReclaimReason = "Kubernetes node deleted"

// ReclaimerConfig configures a NodeReclaimer.
type ReclaimerConfig struct {
	Client kubernetes.Interface
	// Admin appends the reclaim (allocator.Admin.Reclaim, fenced on the liveness key).
	Admin *allocator.Admin
	// Prefix is the etcd key prefix of Coil's data ("" = events.DefaultPrefix).
	Prefix string
	// RetryEvery is how long to wait before trying again a reclaim that was refused
	// (the node's lease still lives) or failed (default 10 s).
	RetryEvery time.Duration
	// Registerer receives the reclaimer's metrics (nil: not registered).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// NodeReclaimer reclaims the blocks and addresses of deleted Kubernetes Nodes. It learns
// of deletions from a Node informer; when it starts, it also takes every node the log
// knows (a node/NAME stream) that is not retired and has no Node object, so deletions
// that happened while no controller ran are not missed. A reclaim is attempted only
// after a fresh GET says the Node does not exist, and Reclaim itself refuses while the
// node's coild holds its lease: such nodes are retried every RetryEvery until their
// lease has expired. Run it under leader election (RunLeader): one reclaimer at a time.
type NodeReclaimer struct {
	cfg  ReclaimerConfig
	log  *slog.Logger
	keys events.Keys
	wake chan struct{}

	attempts *prometheus.CounterVec
	pendingG prometheus.Gauge

	mu      sync.Mutex
	pending map[string]time.Time // node -> next attempt
}

// NewNodeReclaimer returns a reclaimer; Run starts it.
func NewNodeReclaimer(cfg ReclaimerConfig) *NodeReclaimer {
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &NodeReclaimer{
		cfg: cfg, log: cfg.Logger, keys: events.NewKeys(cfg.Prefix), wake: make(chan struct{}, 1),
		pending: map[string]time.Time{},
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coil_node_reclaims_total", Help: "Reclaims of deleted nodes' blocks attempted by coil-controller, by result.",
		}, []string{"result"}),
		pendingG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coil_node_reclaim_pending", Help: "Deleted nodes whose blocks are waiting to be reclaimed (their lease may still live).",
		}),
	}
	for _, res := range []string{"reclaimed", "refused_alive", "node_exists", "error"} {
		r.attempts.WithLabelValues(res)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.attempts, r.pendingG)
	}
	return r
}

// Pending lists the nodes waiting to be reclaimed, sorted.
func (r *NodeReclaimer) Pending() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.pending))
	for n := range r.pending {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (r *NodeReclaimer) enqueue(node string) {
	r.mu.Lock()
	if _, ok := r.pending[node]; !ok {
		r.pending[node] = time.Time{} // now
		r.pendingG.Set(float64(len(r.pending)))
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run watches Nodes and reclaims deleted ones until ctx ends.
func (r *NodeReclaimer) Run(ctx context.Context) error {
	f := informers.NewSharedInformerFactory(r.cfg.Client, 0)
	inf := f.Core().V1().Nodes().Informer()
	lister := f.Core().V1().Nodes().Lister()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				r.log.Info("node deleted; its blocks will be reclaimed once its lease is gone", "k8s_node", n.Name)
				r.enqueue(n.Name)
			}
		},
	}); err != nil {
		return errors.Wrap(err, "node informer")
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil // ctx ended
	}
	// Nodes deleted while no reclaimer ran: known to the log, not retired, no Node.
	heads, _, err := r.cfg.Admin.Log.Streams(ctx, "node/", 0)
	if err != nil {
		return errors.Wrap(err, "list node streams")
	}
	for s := range heads {
		_, name := s.Kind()
		if _, err := lister.Get(name); err == nil || !apierrors.IsNotFound(err) {
			continue
		}
		retired, err := r.retired(ctx, s)
		if err != nil {
			return err
		}
		if !retired {
			r.log.Info("node in the log has no Kubernetes Node; reclaiming once its lease is gone", "k8s_node", name)
			r.enqueue(name)
		}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
		}
		next := r.runDue(ctx)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// retired reads a node stream and reports whether the node was retired.
func (r *NodeReclaimer) retired(ctx context.Context, s events.Stream) (bool, error) {
	retired := false
	if _, err := r.cfg.Admin.Log.Read(ctx, s, 1, 0, func(e *events.Event) error {
		switch e.Payload.(type) {
		case *events.NodeRetired:
			retired = true
		case *events.NodeRegistered:
			retired = false
		}
		return nil
	}); err != nil {
		return false, errors.Wrapf(err, "read %s", s)
	}
	return retired, nil
}

// runDue attempts the reclaims that are due and returns when the next one is.
func (r *NodeReclaimer) runDue(ctx context.Context) time.Time {
	now := time.Now()
	r.mu.Lock()
	var due []string
	for n, at := range r.pending {
		if !at.After(now) {
			due = append(due, n)
		}
	}
	r.mu.Unlock()
	sort.Strings(due)
	for _, n := range due {
		done := r.attempt(ctx, n)
		r.mu.Lock()
		if done {
			delete(r.pending, n)
		} else {
			r.pending[n] = time.Now().Add(r.cfg.RetryEvery)
		}
		r.pendingG.Set(float64(len(r.pending)))
		r.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var next time.Time
	for _, at := range r.pending {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// attempt reclaims one node; true when nothing is left to do for it.
func (r *NodeReclaimer) attempt(ctx context.Context, node string) bool {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err := r.cfg.Client.CoreV1().Nodes().Get(gctx, node, metav1.GetOptions{})
	cancel()
	switch {
	case err == nil:
		r.attempts.WithLabelValues("node_exists").Inc()
		r.log.Info("node exists again; not reclaiming it", "k8s_node", node)
		return true
	case !apierrors.IsNotFound(err):
		r.attempts.WithLabelValues("error").Inc()
		r.log.Warn("cannot check the node; retrying", "k8s_node", node, "err", err)
		return false
	}
	res, err := r.cfg.Admin.Reclaim(ctx, node, r.keys.Alive(node), ReclaimReason)
	switch {
	case errors.Is(err, allocator.ErrNodeAlive):
		r.attempts.WithLabelValues("refused_alive").Inc()
		r.log.Info("node's coild still holds its lease; retrying later", "k8s_node", node, "retry_in", r.cfg.RetryEvery)
		return false
	case err != nil:
		r.attempts.WithLabelValues("error").Inc()
		r.log.Warn("reclaim failed; retrying", "k8s_node", node, "err", err)
		return false
	}
	r.attempts.WithLabelValues("reclaimed").Inc()
	r.log.Info("reclaimed deleted node", "k8s_node", node, "addresses", res.Released, "blocks", res.Reclaimed)
	return true
}
