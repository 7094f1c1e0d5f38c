package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
)

// metrics are coild's Prometheus metrics (documented in docs/coild.md).
type metrics struct {
	reg              *prometheus.Registry
	cniDuration      *prometheus.HistogramVec
	allocations      *prometheus.CounterVec
	releases         *prometheus.CounterVec
	appendConflicts  *prometheus.CounterVec
	appends          *prometheus.CounterVec
	reconcileActions *prometheus.CounterVec
	watchRevision    prometheus.Gauge
	appendRetries    *prometheus.CounterVec
	gcReleases       *prometheus.CounterVec
	poolBlocks       *prometheus.GaugeVec
	logLag           prometheus.Gauge
	indexChunks      prometheus.Counter
	revMu            sync.Mutex
	rev              int64

	// conflicted holds the streams whose last append by this process lost a race: the
	// next append to them is a retry.
	conflictMu sync.Mutex
	conflicted map[events.Stream]bool
	pools      map[string]bool // pools with coil_pool_blocks series
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		cniDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coil_cni_request_duration_seconds", Help: "Time coild took to serve a CNI request, by command and result.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"command", "result"}),
		allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coil_address_allocations_total", Help: "Addresses assigned by this node, by pool.",
		}, []string{"pool"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coil_address_releases_total", Help: "Addresses released by this node, by reason.",
		}, []string{"reason"}),
		appendConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coil_log_append_conflicts_total", Help: "Appends that lost an optimistic-concurrency race, by stream kind.",
		}, []string{"stream_kind"}),
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coil_log_appends_total", Help: "Appends (transactions) to the event log, by stream kind and result.",
		}, []string{"stream_kind", "result"}),
		reconcileActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coil_reconcile_actions_total", Help: "Changes the reconciler made to the kernel or the log, by action.",
		}, []string{"action"}),
		watchRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coil_log_watch_revision", Help: "The etcd revision of the last log event this node applied (replayed, watched or appended itself).",
		}),
		appendRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coil_log_append_retries_total", Help: "Appends made to a stream right after this node's previous append to it lost a race, by stream kind.",
		}, []string{"stream_kind"}),
		gcReleases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coil_gc_releases_total", Help: "Addresses released by the Kubernetes leak collector (pod gone, confirmed after the grace period), by reason.",
		}, []string{"reason"}),
		poolBlocks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coil_pool_blocks", Help: "Blocks of each pool, owned by any node (used) or not (free), as this node's log view sees them.",
		}, []string{"pool", "state"}),
		logLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coil_log_lag_revisions", Help: "How many etcd revisions the newest event of the streams this node follows is ahead of the last one it applied (0: caught up).",
		}),
		indexChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coil_index_chunks_written_total", Help: "Attachment-index entries (one per 1024-event chunk of the node's stream) this coild wrote.",
		}),
		conflicted: map[events.Stream]bool{},
		pools:      map[string]bool{},
	}
	m.reg.MustRegister(m.cniDuration, m.allocations, m.releases, m.appendConflicts, m.appends, m.reconcileActions, m.watchRevision,
		m.appendRetries, m.gcReleases, m.poolBlocks, m.logLag, m.indexChunks,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every series whose labels are known in advance exists from the start (at zero), so
	// a rate() or an alert sees the first increment and a scrape shows every metric.
	for _, cmd := range []string{"ADD", "DEL", "CHECK", "GC"} {
		for _, res := range []string{"ok", "error", "try_again"} {
			m.cniDuration.WithLabelValues(cmd, res)
		}
	}
	for _, r := range []string{"cni_del", "cni_gc", "add_failed", "reconcile", "leak_gc", "other"} {
		m.releases.WithLabelValues(r)
	}
	for _, r := range []string{"pod_deleted", "pod_replaced"} {
		m.gcReleases.WithLabelValues(r)
	}
	for _, kind := range []string{"cluster", "pool", "node", "block"} {
		m.appendConflicts.WithLabelValues(kind)
		m.appendRetries.WithLabelValues(kind)
		for _, res := range []string{"ok", "conflict", "error"} {
			m.appends.WithLabelValues(kind, res)
		}
	}
	for _, a := range []string{"export_add", "export_del", "release_missing_veth", "release_unplumbed_veth", "delete_leaked_veth", "resume_del", "keep_unproven_missing_veth"} {
		m.reconcileActions.WithLabelValues(a)
	}
	return m
}

// noteRevision raises coil_log_watch_revision to rev (it never goes back).
func (m *metrics) noteRevision(rev int64) {
	m.revMu.Lock()
	defer m.revMu.Unlock()
	if rev > m.rev {
		m.rev = rev
		m.watchRevision.Set(float64(rev))
	}
}

func (m *metrics) observeCNI(cmd string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
		var ce *cniproto.Error
		if errors.As(err, &ce) && ce.Code == cniproto.CodeTryAgainLater {
			result = "try_again"
		}
	}
	m.cniDuration.WithLabelValues(cmd, result).Observe(time.Since(start).Seconds())
}

// metricLog counts appends and conflicts.
type metricLog struct {
	events.Log
	m *metrics
}

func (l *metricLog) Append(ctx context.Context, req events.AppendRequest) (events.Version, error) {
	v, err := l.Log.Append(ctx, req)
	kind, _ := req.Stream.Kind()
	var ce *events.ConflictError
	if errors.As(err, &ce) {
		if k, _ := ce.Stream.Kind(); k == "block" {
			kind = k // a block take that collided with another node's (its node-stream append carried the block stream)
		}
	}
	l.m.conflictMu.Lock()
	if l.m.conflicted[req.Stream] {
		l.m.appendRetries.WithLabelValues(kind).Inc()
	}
	if errors.Is(err, events.ErrConflict) {
		l.m.conflicted[req.Stream] = true
	} else {
		delete(l.m.conflicted, req.Stream)
	}
	l.m.conflictMu.Unlock()
	switch {
	case err == nil:
		l.m.appends.WithLabelValues(kind, "ok").Inc()
		// The node applies its own events without waiting for the watch (which skips them).
		for _, e := range req.Events {
			l.m.noteRevision(e.Revision)
		}
	case errors.Is(err, events.ErrConflict):
		l.m.appends.WithLabelValues(kind, "conflict").Inc()
		l.m.appendConflicts.WithLabelValues(kind).Inc()
	default:
		l.m.appends.WithLabelValues(kind, "error").Inc()
	}
	return v, err
}

func (d *Daemon) serveMetrics(ctx context.Context) {
	if d.cfg.MetricsAddr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/ipam", d.serveIPAM) // read-only: the kernel against the projection (coilctl ipam check)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	ln, err := net.Listen("tcp", d.cfg.MetricsAddr)
	if err != nil {
		d.log.Error("metrics listener", "addr", d.cfg.MetricsAddr, "err", err)
		return
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	_ = srv.Serve(ln)
}

// metricsLoop updates the sampled gauges every MetricsInterval.
func (d *Daemon) metricsLoop(ctx context.Context) {
	update := func() {
		d.updatePoolBlocks()
		if d.loaded.Load() {
			if err := d.updateLogLag(ctx); err != nil && ctx.Err() == nil {
				d.log.Debug("log lag", "err", err)
			}
		}
	}
	update()
	every(ctx, d.cfg.MetricsInterval, nil, update)
}

// updatePoolBlocks sets coil_pool_blocks from the node's projection; series of deleted
// pools are removed.
func (d *Daemon) updatePoolBlocks() {
	m := d.metrics
	usage := d.node.PoolUsage()
	m.conflictMu.Lock()
	defer m.conflictMu.Unlock()
	for pool := range m.pools {
		if _, ok := usage[pool]; !ok {
			m.poolBlocks.DeleteLabelValues(pool, "used")
			m.poolBlocks.DeleteLabelValues(pool, "free")
			delete(m.pools, pool)
		}
	}
	for pool, u := range usage {
		m.pools[pool] = true
		m.poolBlocks.WithLabelValues(pool, "used").Set(float64(u.Used))
		m.poolBlocks.WithLabelValues(pool, "free").Set(float64(u.Total - u.Used))
	}
}

// updateLogLag reads the heads of the streams the node follows (the cluster stream,
// every pool stream, its own node stream) in one transaction and sets
// coil_log_lag_revisions to how far the newest of them is past the last revision the
// node applied. Writes the node does not follow (other nodes' streams, leases,
// anything else in etcd) do not count as lag.
func (d *Daemon) updateLogLag(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := d.cli.Txn(ctx).Then(
		clientv3.OpGet(d.keys.Head(events.ClusterStream), clientv3.WithKeysOnly()),
		clientv3.OpGet(d.keys.HeadPrefix()+"pool/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(d.keys.Head(events.NodeStream(d.cfg.Node)), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return err
	}
	var head int64
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			head = max(head, kv.ModRevision)
		}
	}
	d.metrics.revMu.Lock()
	applied := d.metrics.rev
	d.metrics.revMu.Unlock()
	d.metrics.logLag.Set(float64(max(0, head-applied)))
	return nil
}
