package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/cniproto/cniserver"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/exporter"
	"github.com/coil-net/coil/internal/etcdclient"
	"github.com/coil-net/coil/internal/etcdembed"
	"github.com/coil-net/coil/kube"
	"github.com/coil-net/coil/netplumb"
)

// Sentinel errors.
var (
	ErrNotReady     = errors.New("coild: not ready")
	ErrNodeTaken    = errors.New("coild: another coild holds this node's lease")
	ErrInvalidInput = errors.New("coild: invalid request")
	// ErrInvalidConfig: a flag (Config field) coild refuses; see Config.Validate.
	ErrInvalidConfig = errors.New("coild: invalid configuration")
)

// Daemon is a running coild.
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	etcd    *embed.Etcd
	cli     *clientv3.Client
	elog    *events.EtcdLog
	keys    events.Keys
	node    *allocator.Node
	plumber Plumber
	// kernelPlumber is the netplumb Plumber New opened (closed by Close); nil when
	// Config.Plumber was given.
	kernelPlumber *netplumb.Plumber
	exp           *exporter.Exporter
	server        *cniserver.Server
	metrics       *metrics

	// Kubernetes (nil when off): informers, the leak collector, and a nudge after a
	// pod of the node is deleted.
	pods     *kube.PodCache
	leaks    *kube.LeakCollector
	kubeWake chan struct{}
	// labelsWake: the Node object's labels changed (its informer); nil without Kubernetes.
	labelsWake chan struct{}

	// lockFile holds the state directory's flock for the daemon's lifetime.
	lockFile *os.File
	// boot is the machine's boot (ID and time); netnsID the namespace coild plumbs.
	boot    bootInfo
	netnsID string
	// trustFrom: attachments from this node-stream sequence on were plumbed by a coild
	// of this state directory in this namespace during this boot (nodeRecord); the
	// reconciler releases a missing veth's address only for them and for attachments
	// older than the boot. Set by each session before its first reconcile pass.
	trustFrom atomic.Uint64
	// kept holds the host veths of attachments the reconciler did not release though
	// their veth is missing (logged once per session). Session goroutine only.
	kept map[string]bool

	// autoMTU is the MTU of the node's default route (mtu.go), nil until read.
	autoMTU atomic.Pointer[mtuChoice]

	ready atomic.Bool
	// sessions counts the sessions that became ready; leaseCheck asks the lease's
	// keep-alive to renew at once (an append was fenced: is the lease gone?).
	sessions   atomic.Uint64
	leaseCheck chan struct{}
	// loaded is true once the current session has read the log: only then may a DEL
	// release (before it, the attachment is not known yet and the release would be lost).
	loaded atomic.Bool
	lease  atomic.Int64

	mu       sync.Mutex
	inflight map[string]int           // host veth -> ADDs in progress
	deleting map[string]chan struct{} // host veth -> closed when its DEL finished
	// recent holds the host veths whose ADD or DEL finished since the current reconcile
	// pass took its snapshots: the pass leaves them alone (its snapshots may predate them).
	recent map[string]bool

	delq    chan delItem
	syncReq chan struct{}
	// reconcileReq asks the session loop for a reconcile pass now: an operator released
	// an address of this node (coilctl address release), and its veth must go.
	reconcileReq chan struct{}
	index        indexer // the background attachment-index builder (index.go)
}

// New prepares a daemon: starts the embedded etcd if asked, connects to etcd, opens the
// netlink handles and the CNI socket. Run starts the work.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{
		cfg: cfg, log: cfg.Logger.With("node", cfg.Node), keys: events.NewKeys(cfg.EtcdPrefix),
		inflight: map[string]int{}, deleting: map[string]chan struct{}{}, recent: map[string]bool{},
		delq: make(chan delItem, 4096), syncReq: make(chan struct{}, 1), leaseCheck: make(chan struct{}, 1), reconcileReq: make(chan struct{}, 1), index: newIndexer(),
	}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "del"), 0o700); err != nil {
		return nil, errors.Wrap(err, "state dir")
	}
	// Before anything else uses the directory or etcd: one coild per state directory.
	lock, lerr := lockStateDir(cfg.StateDir, cfg.Node)
	if lerr != nil {
		return nil, lerr
	}
	d.lockFile = lock
	boot, berr := readBoot()
	if berr != nil {
		return nil, berr
	}
	d.boot = boot
	if cfg.EmbeddedEtcdDir != "" {
		if len(cfg.EtcdEndpoints) == 0 {
			return nil, errors.Wrap(ErrInvalidInput, "--embedded-etcd needs an --etcd-endpoints URL to serve")
		}
		e, err := etcdembed.StartEmbedded(cfg.EmbeddedEtcdDir, cfg.EtcdEndpoints[0], true)
		if err != nil {
			return nil, errors.Wrapf(err, "start embedded etcd in %s", cfg.EmbeddedEtcdDir)
		}
		d.etcd = e
		d.log.Info("embedded etcd started", "dir", cfg.EmbeddedEtcdDir, "url", cfg.EtcdEndpoints[0])
	}
	if d.etcd != nil && !cfg.etcdViaSocket {
		// coild's own client calls the embedded server directly, not through its socket:
		// a commit costs ~0.3 ms instead of ~0.7-0.9 ms through gRPC over the unix socket
		// (docs/benchmarks.md, "coild and its embedded etcd"). Others (coilctl, other
		// nodes) still use the URL.
		d.cli = v3client.New(d.etcd.Server)
	} else {
		cli, err := etcdclient.New(etcdclient.Config{
			Endpoints: cfg.EtcdEndpoints, CACert: cfg.EtcdCACert, Cert: cfg.EtcdCert, Key: cfg.EtcdKey, DialTimeout: 10 * time.Second,
		})
		if err != nil {
			return nil, err
		}
		d.cli = cli
	}
	d.elog = events.NewEtcdLog(d.cli, events.EtcdConfig{Prefix: cfg.EtcdPrefix, Logger: d.log})
	var err error
	if d.plumber = cfg.Plumber; d.plumber == nil {
		d.kernelPlumber, err = netplumb.New(netplumb.Config{HostNetNS: cfg.HostNetNS, RouteProtocol: cfg.RouteProtocol, Logger: d.log})
		if err != nil {
			return nil, errors.Wrap(err, "netlink")
		}
		d.plumber = kernel{d.kernelPlumber}
	}
	d.refreshAutoMTU() // before the first ADD; an ADD never reads it from the kernel
	d.netnsID = d.plumber.HostNetNSID()
	d.exp = exporter.New(d.plumber, exporter.Config{Table: cfg.ExportTable, Protocol: cfg.RouteProtocol})
	d.metrics = newMetrics()
	d.node = allocator.NewNode(allocator.NodeConfig{
		Node: cfg.Node, Log: &metricLog{Log: d.elog, m: d.metrics}, Clock: events.SystemClock{},
		AliveKey: d.keys.Alive(cfg.Node), Logger: cfg.Logger,
	})
	if err = d.setupKube(); err != nil {
		return nil, err
	}
	d.server, err = cniserver.NewWithOptions(d, cfg.Socket, d.log, cniserver.Options{AllowUIDs: cfg.AllowUIDs})
	if err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

// Close releases everything New acquired. It does not touch pods.
func (d *Daemon) Close() {
	if d.server != nil {
		d.server.Close()
	}
	if d.elog != nil {
		_ = d.elog.Close()
	}
	if d.cli != nil {
		_ = d.cli.Close()
	}
	if d.kernelPlumber != nil {
		_ = d.kernelPlumber.Close()
	}
	if d.etcd != nil {
		d.etcd.Close()
	}
	if d.lockFile != nil {
		_ = d.lockFile.Close() // drops the flock
	}
}

// repeat calls f after a wait of first, then again after each wait of what f returned,
// until ctx ends or f returns 0 (or less). A receive from wake (nil: none) ends a wait
// early. The lease keep-alive runs on it, and every.
func repeat(ctx context.Context, first time.Duration, wake <-chan struct{}, f func() time.Duration) {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		next := f()
		if next <= 0 {
			return
		}
		t.Reset(next)
	}
}

// every calls f interval after its previous call ended, and at once on each receive
// from wake (nil: none), until ctx ends. The mtu, leak and metrics loops run on it.
func every(ctx context.Context, interval time.Duration, wake <-chan struct{}, f func()) {
	repeat(ctx, interval, wake, func() time.Duration {
		f()
		return interval
	})
}

// Run registers the node and serves until ctx ends. A lost lease starts a new session
// (new lease, reload, re-register) without dropping the CNI socket; meanwhile requests
// get "try again".
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(8)
	go func() { defer wg.Done(); d.mtuLoop(ctx) }()
	go func() { defer wg.Done(); d.node.Run(ctx) }()
	go func() { defer wg.Done(); d.indexLoop(ctx) }()
	go func() { defer wg.Done(); d.runKube(ctx) }()
	go func() { defer wg.Done(); d.metricsLoop(ctx) }()
	go func() { defer wg.Done(); d.delWorker(ctx) }()
	go func() {
		defer wg.Done()
		if err := d.server.Serve(ctx); err != nil && ctx.Err() == nil {
			d.log.Error("CNI server stopped", "err", err)
			cancel()
		}
	}()
	go func() { defer wg.Done(); d.serveMetrics(ctx) }()

	first := true
	for ctx.Err() == nil {
		err := d.session(ctx, first)
		first = false
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, events.ErrRewritten):
			// Someone replaced the log (an import with --force): read it again, with a
			// new session, instead of failing every request against a stale state.
			d.log.Warn("the log was rewritten under coild; reading it again in a new session", "err", err)
		case errors.Is(err, ErrNodeTaken), errors.Is(err, events.ErrUnknownType), errors.Is(err, events.ErrFutureSchema),
			errors.Is(err, events.ErrCorrupt), errors.Is(err, events.ErrChainBroken):
			return err
		default:
			d.log.Warn("session ended; starting a new one", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// session: lease, registration, replay, watch, reconcile loop. It returns when the lease
// is lost or the watch fails.
func (d *Daemon) session(ctx context.Context, first bool) error {
	d.ready.Store(false)
	d.loaded.Store(false)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prev, why := readRecord(d.cfg.StateDir)
	if prev == nil && why != "no record" {
		d.log.Warn("state directory's node record ignored", "reason", why)
	}
	lease, lost, rec, err := d.acquireLease(sctx, prev)
	if err != nil {
		return err
	}
	d.node.SetLease(lease)
	// Load after the liveness key exists: a reclaim that happened before is then visible.
	rev, after, err := d.node.Load(sctx)
	if err != nil {
		return errors.Wrap(err, "replay the log")
	}
	stale := d.node.Stale()
	d.metrics.noteRevision(rev)
	lastReg, _ := d.node.Registration()
	if err := d.node.Register(sctx); err != nil {
		return errors.Wrap(err, "register node")
	}
	d.noteTrust(rec, lastReg)
	d.recordLabels(sctx) // before ADDs are served: pools with a node selector match them
	d.loaded.Store(true)
	d.requestIndex() // the replay may have passed chunk boundaries
	watch := d.elog.Watch(sctx, d.node.WatchRequest(rev, after))
	if err := d.reconcile(sctx, first); err != nil {
		d.log.Error("reconcile", "err", err)
	}
	d.sessions.Add(1)
	d.ready.Store(true)
	d.log.Info("ready", "lease", lease, "revision", rev, "blocks", len(d.node.Blocks()), "addresses", len(d.node.Attachments()))
	tick := time.NewTicker(d.cfg.ReconcileEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-lost:
			d.ready.Store(false)
			return errors.Newf("lease %d lost", lease)
		case <-stale:
			d.ready.Store(false)
			return errors.Wrap(d.node.StaleErr(), "the log was rewritten under this node")
		case b, ok := <-watch:
			if !ok {
				return errors.New("watch closed")
			}
			if b.Err != nil {
				return errors.Wrap(b.Err, "watch")
			}
			d.metrics.noteRevision(b.Revision)
			for _, e := range b.Events {
				if err := d.node.Observe(sctx, e); err != nil {
					return errors.Wrapf(err, "apply %s #%d", e.Stream, e.Seq)
				}
				d.noteIndex(e)
				d.noteForeignRelease(e)
			}
			d.requestSync()
		case <-d.syncReq:
			d.syncExport(sctx, syncForWatch)
		case <-d.reconcileReq:
			if err := d.reconcile(sctx, false); err != nil {
				d.log.Error("reconcile", "err", err)
			}
		case <-d.labelsWake:
			d.recordLabels(sctx)
		case <-tick.C:
			d.recordLabels(sctx)
			if n, err := d.node.ReleaseEmptyBlocks(sctx, d.cfg.BlockGrace); err != nil {
				d.log.Warn("release empty blocks", "err", err)
			} else if n > 0 {
				d.requestSync()
			}
			if err := d.reconcile(sctx, false); err != nil {
				d.log.Error("reconcile", "err", err)
			}
		}
	}
}

// noteForeignRelease asks for a reconcile pass when e releases an address of this node
// and was written by someone else (`coilctl address release`): the allocator has dropped
// the attachment (Observe, or a conflict before), so the pass deletes its veth, and with
// it the /32 route, now rather than at the next --reconcile-interval.
func (d *Daemon) noteForeignRelease(e *events.Event) {
	if _, ok := e.Payload.(*events.AddressReleased); !ok || e.Actor == d.cfg.Node || e.Stream != events.NodeStream(d.cfg.Node) {
		return
	}
	d.log.Info("an address of this node was released by someone else; reconciling", "actor", e.Actor, "seq", e.Seq)
	wake(d.reconcileReq)
}

func (d *Daemon) requestSync() { wake(d.syncReq) }

// wake sends on a wake channel of capacity 1 without blocking: a wake already pending
// covers this one.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Why an export sync runs (logged with it).
const (
	syncForAdd       = "add"       // an ADD's block is not in the table yet
	syncForWatch     = "watch"     // the log changed the node's blocks (session loop)
	syncForReconcile = "reconcile" // the end of a reconcile pass
)

// slowExportSync: a sync taking longer than this is logged at Info with its timings.
const slowExportSync = 500 * time.Millisecond

// ensureExported returns once every block of asg is in the export table, so a pod's
// block route exists before its ADD returns (exporter.Ensure: one route added per
// missing block, no listing of the table; the ADDs of a burst that land in one new
// block add its route once). A failed add is logged, asks the session loop for a full
// sync, and the ADD goes on.
func (d *Daemon) ensureExported(ctx context.Context, asg *allocator.Assignment) {
	rep, err := d.exp.Ensure(ctx, asg.BlockPrefixes)
	if err != nil {
		d.log.Error("export route", "trigger", syncForAdd, "blocks", asg.BlockPrefixes, "err", err)
		d.requestSync()
		return
	}
	if rep.Skipped {
		return
	}
	d.metrics.reconcileActions.WithLabelValues("export_add").Add(float64(len(rep.Added)))
	d.log.Info("export table synced", "trigger", syncForAdd, "added", len(rep.Added), "blocks", rep.Added,
		"waited", rep.Waited.Round(time.Microsecond), "took", rep.Took.Round(time.Microsecond))
}

// syncExport makes the export table equal to the node's blocks. A reconcile pass calls
// it at its end, after listing links and releasing, so an ADD waiting for its block's
// route waits at most for one sync in progress, never for the rest of a reconcile pass.
//
// The session loop asks for a sync after every batch of watched events, most of which
// (the node's own address events, during a burst one per ADD) leave the blocks as they
// are: with syncForWatch it syncs only when the node's blocks differ from what the
// exporter knows it exported (exporter.SyncChanged), so it does not hold the table's
// lock (and the kernel) while ADDs wait for their block's route. A reconcile pass
// always syncs (exporter.Sync): it also repairs a table changed behind coild's back.
// The blocks are read under the exporter's lock, so a sync never writes an older view
// over a newer one.
func (d *Daemon) syncExport(ctx context.Context, trigger string) {
	syncTable := d.exp.Sync
	if trigger == syncForWatch {
		syncTable = d.exp.SyncChanged
	}
	rep, err := syncTable(ctx, d.node.BlockPrefixes)
	if err != nil {
		d.log.Error("export table sync", "trigger", trigger, "err", err)
		return
	}
	if rep.Skipped {
		return
	}
	added, removed := len(rep.Added), len(rep.Removed)
	attrs := []any{"trigger", trigger, "blocks", rep.Blocks, "added", added, "removed", removed,
		"waited", rep.Waited.Round(time.Microsecond), "took", rep.Took.Round(time.Microsecond)}
	switch {
	case added+removed > 0:
		d.metrics.reconcileActions.WithLabelValues("export_add").Add(float64(added))
		d.metrics.reconcileActions.WithLabelValues("export_del").Add(float64(removed))
		d.log.Info("export table synced", attrs...)
	case rep.Waited+rep.Took > slowExportSync:
		d.log.Info("export table sync was slow", attrs...)
	default:
		d.log.Debug("export table sync", attrs...)
	}
}

// acquireLease grants a lease and creates the node's liveness key on it. The lease of
// the previous run is revoked first, so a restart need not wait for it to expire, but
// only when prev (the state directory's record) proves that lease is this directory's:
// same node, same etcd cluster and prefix, and the liveness key still held by it
// (revokeOwnLease). Under any other lease coild waits for it to expire, then fails with
// ErrNodeTaken. The whole start (revoke included) is bounded by twice the TTL from its
// first call. The new lease is recorded at once (rec, returned).
func (d *Daemon) acquireLease(ctx context.Context, prev *nodeRecord) (int64, <-chan struct{}, *nodeRecord, error) {
	key := d.keys.Alive(d.cfg.Node)
	deadline := time.Now().Add(2 * d.cfg.LeaseTTL)
	if err := d.revokeOwnLease(ctx, deadline, prev, key); err != nil {
		return 0, nil, nil, err
	}
	ttl := int64(d.cfg.LeaseTTL / time.Second)
	for {
		var g *clientv3.LeaseGrantResponse
		err := d.tryEtcd(ctx, deadline, "grant lease", func(actx context.Context) (err error) {
			g, err = d.cli.Grant(actx, ttl)
			return err
		})
		if err != nil {
			return 0, nil, nil, err
		}
		// Tried again with the same lease after a try that timed out (it may have been
		// committed): the key then exists with this lease, which is as good as created.
		var resp *clientv3.TxnResponse
		err = d.tryEtcd(ctx, deadline, "create liveness key", func(actx context.Context) (err error) {
			resp, err = d.cli.Txn(actx).
				If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, events.AliveValue(events.AliveInfo{Node: d.cfg.Node, Level: events.CurrentLevel, Build: events.Build()}), clientv3.WithLease(g.ID))).
				Else(clientv3.OpGet(key)).
				Commit()
			return err
		})
		if err != nil {
			return 0, nil, nil, err
		}
		if !resp.Succeeded {
			if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 && kvs[0].Lease == int64(g.ID) {
				resp.Succeeded = true
			}
		}
		if resp.Succeeded {
			rec := d.recordFor(prev, resp.Header.ClusterId, int64(g.ID))
			if err := writeRecord(d.cfg.StateDir, rec); err != nil {
				d.log.Warn("record lease", "err", err)
			}
			lost := d.keepLeaseAlive(ctx, g.ID, time.Duration(ttl)*time.Second)
			d.lease.Store(int64(g.ID))
			return int64(g.ID), lost, rec, nil
		}
		holder := int64(0)
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			holder = kvs[0].Lease
		}
		rctx, cancel := context.WithTimeout(ctx, leaseAttempt) // best effort: it expires anyway
		_, _ = d.cli.Revoke(rctx, g.ID)
		cancel()
		if time.Now().After(deadline) {
			return 0, nil, nil, errors.Wrapf(ErrNodeTaken, "node %q: liveness key %s is held by lease %x, which this state directory (%s) did not record; is another coild running with --node %s?",
				d.cfg.Node, key, holder, d.cfg.StateDir, d.cfg.Node)
		}
		d.log.Info("waiting for the lease holding this node's liveness key to expire", "key", key, "lease", fmt.Sprintf("%x", holder))
		select {
		case <-ctx.Done():
			return 0, nil, nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// tryEtcd runs f, each try bounded by leaseAttempt, until it succeeds, fails for good
// (an error that is not events.Transient), ctx ends or deadline passes (then the last
// error, wrapped with what). A member that stopped answering without closing its
// connections (paused, stuck on a disk) costs one try, not the session's start: a call
// routed to a paused member hung until it resumed (16 s in
// TestEtcdMemberPausedKeepsSessions), with coild not ready all along.
func (d *Daemon) tryEtcd(ctx context.Context, deadline time.Time, what string, f func(context.Context) error) error {
	// A call past the deadline still gets its one try (the caller decides what a late
	// success means: a liveness key still held by another lease is ErrNodeTaken).
	if first := time.Now().Add(leaseAttempt); deadline.Before(first) {
		deadline = first
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	_, err := events.Retry(ctx, events.RetryPolicy{
		Attempt: leaseAttempt, FirstWait: 100 * time.Millisecond,
		OnRetry: func(attempt int, err error, _ time.Duration) {
			d.log.Warn("etcd did not answer; trying again", "what", what, "attempt", attempt, "err", err)
		},
	}, f)
	return errors.Wrap(err, what)
}

// revokeOwnLease revokes the lease prev records if, and only if, it is provably this
// state directory's own: the record is for this node and key prefix, etcd's cluster ID is
// the recorded one (a lease ID means nothing in another cluster), and the node's liveness
// key is still held by exactly that lease. Anything else is left alone (and logged): it
// may be another coild's, which must keep it. Both calls are tried like the lease's grant
// (tryEtcd, until the session start's deadline): one placed on a paused member must not
// hold the start until it resumes.
func (d *Daemon) revokeOwnLease(ctx context.Context, deadline time.Time, prev *nodeRecord, key string) error {
	if prev == nil {
		return nil
	}
	var resp *clientv3.GetResponse
	if err := d.tryEtcd(ctx, deadline, "read liveness key "+key, func(actx context.Context) (err error) {
		resp, err = d.cli.Get(actx, key)
		return err
	}); err != nil {
		return err
	}
	var reason string
	switch {
	case prev.Node != d.cfg.Node:
		reason = fmt.Sprintf("the record is for node %q", prev.Node)
	case prev.Prefix != d.cfg.EtcdPrefix:
		reason = fmt.Sprintf("the record is for etcd prefix %q", prev.Prefix)
	case prev.ClusterID != resp.Header.ClusterId:
		reason = fmt.Sprintf("the record is for etcd cluster %x, this is %x", prev.ClusterID, resp.Header.ClusterId)
	case len(resp.Kvs) == 0:
		return nil // the key is gone: nothing holds the node, nothing to revoke
	case resp.Kvs[0].Lease != prev.Lease:
		reason = fmt.Sprintf("the liveness key is held by lease %x, the record names %x", resp.Kvs[0].Lease, prev.Lease)
	}
	if reason != "" {
		d.log.Info("not revoking the recorded lease: not provably this state directory's", "lease", fmt.Sprintf("%x", prev.Lease), "reason", reason)
		return nil
	}
	d.log.Info("revoking this state directory's previous lease", "lease", fmt.Sprintf("%x", prev.Lease), "key", key)
	return d.tryEtcd(ctx, deadline, fmt.Sprintf("revoke previous lease %x", prev.Lease), func(actx context.Context) error {
		_, err := d.cli.Revoke(actx, clientv3.LeaseID(prev.Lease))
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil // gone already (expired, or an earlier try that timed out revoked it)
		}
		return err
	})
}

// sameHome reports whether prev was written by a coild of this state directory for
// this node, etcd cluster and prefix, in this namespace during this boot.
func (d *Daemon) sameHome(prev *nodeRecord, clusterID uint64) bool {
	return prev != nil && prev.Node == d.cfg.Node && prev.Prefix == d.cfg.EtcdPrefix && prev.ClusterID == clusterID &&
		prev.BootID == d.boot.ID && prev.NetNS == d.netnsID
}

// recordFor is the record of a new lease: the home and the trust carried over from prev
// when it is the same home, reset otherwise.
func (d *Daemon) recordFor(prev *nodeRecord, clusterID uint64, lease int64) *nodeRecord {
	rec := &nodeRecord{Node: d.cfg.Node, ClusterID: clusterID, Prefix: d.cfg.EtcdPrefix, Lease: lease, BootID: d.boot.ID, NetNS: d.netnsID}
	if d.sameHome(prev, clusterID) {
		rec.Registered, rec.TrustFrom = prev.Registered, prev.TrustFrom
	}
	return rec
}

// noteTrust runs once the session registered: the trust carries on when the node's
// previous registration (lastReg, read before registering) was this directory's own in
// this home; otherwise (first start here, a lost record, a reboot, another namespace,
// another coild registered the node meanwhile, an imported log) it starts at the new
// registration. The record is updated and the reconciler told.
func (d *Daemon) noteTrust(rec *nodeRecord, lastReg int64) {
	_, head := d.node.Registration()
	if rec.Registered == 0 || rec.Registered != lastReg {
		if rec.TrustFrom != 0 || lastReg != 0 {
			d.log.Info("this namespace is proven the node's only for attachments from now on",
				"from", head, "previousLease", fmt.Sprintf("%x", lastReg), "recordedLease", fmt.Sprintf("%x", rec.Registered))
		}
		rec.TrustFrom = head
	}
	rec.Registered = rec.Lease
	if err := writeRecord(d.cfg.StateDir, rec); err != nil {
		d.log.Warn("record registration", "err", err)
	}
	d.trustFrom.Store(rec.TrustFrom)
	d.kept = map[string]bool{}
}
