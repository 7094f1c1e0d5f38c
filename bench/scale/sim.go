package main

import (
	"context"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdclient"
)

// simNode is one simulated node: what coild does with etcd, without the kernel. Its own
// etcd client, a lease with a liveness key (fencing), a real allocator.Node (replay,
// registration, group commit) and a watch of the streams the node follows, whose events
// the node folds as coild's session loop does.
type simNode struct {
	session
	node    *allocator.Node
	renewMu sync.Mutex
}

type simConfig struct {
	endpoints    []string
	prefix       string
	leaseTTL     time.Duration
	c            *counters
	noWatch      bool
	watchOrdered bool
}

// startNode connects, takes a lease and liveness key, starts the committer, replays,
// registers and starts the watch: coild's session up to "ready".
func startNode(ctx context.Context, cfg simConfig, name string) (*simNode, error) {
	cli, err := newClient(cfg.endpoints)
	if err != nil {
		return nil, errors.Wrapf(err, "node %s: client", name)
	}
	n := &simNode{session: session{name: name, cli: cli}}
	fail := func(err error, what string) (*simNode, error) {
		n.stop()
		return nil, errors.Wrapf(err, "node %s: %s", name, what)
	}
	rctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.rctx, n.ttl = cancel, rctx, cfg.leaseTTL
	n.alive = events.NewKeys(cfg.prefix).Alive(name)
	if err := n.takeLease(ctx); err != nil {
		return fail(err, "lease")
	}
	n.log = events.NewEtcdLog(cli, events.EtcdConfig{Prefix: cfg.prefix})
	n.node = allocator.NewNode(allocator.NodeConfig{
		Node: name, Log: &countingLog{Log: n.log, c: cfg.c}, AliveKey: n.alive, Lease: int64(n.lease),
	})
	n.wg.Add(1)
	go func() { defer n.wg.Done(); n.node.Run(rctx) }()
	rev, after, err := n.node.Load(ctx)
	if err != nil {
		return fail(err, "replay")
	}
	if err := n.node.Register(ctx); err != nil {
		return fail(err, "register")
	}
	if cfg.noWatch {
		return n, nil
	}
	req := n.node.WatchRequest(rev, after)
	req.PerStreamOrder = !cfg.watchOrdered
	watch := n.log.Watch(rctx, req)
	n.watch(watch, cfg.c, func(e *events.Event) error {
		return errors.Wrapf(n.node.Observe(rctx, e), "apply %s #%d", e.Stream, e.Seq)
	})
	return n, nil
}

// takeLease grants a lease, creates the liveness key on it and keeps it alive.
func (n *simNode) takeLease(ctx context.Context) error {
	g, err := n.cli.Grant(ctx, int64(n.ttl/time.Second))
	if err != nil {
		return errors.Wrap(err, "grant lease")
	}
	resp, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(n.alive), "=", 0)).
		Then(clientv3.OpPut(n.alive, n.name, clientv3.WithLease(g.ID))).Commit()
	if err != nil {
		return errors.Wrap(err, "liveness key")
	}
	if !resp.Succeeded {
		return errors.New("liveness key already held")
	}
	n.lease = g.ID
	return errors.Wrap(n.keepAlive(g.ID), "keep lease alive")
}

// renew starts a new session after the lease was lost (etcd too busy to renew it in
// time), as coild does: new lease and liveness key, replay, register. The watch goes on.
func (n *simNode) renew(ctx context.Context, lost int64) error {
	n.renewMu.Lock()
	defer n.renewMu.Unlock()
	if int64(n.lease) != lost {
		return nil // another caller renewed it
	}
	if err := n.takeLease(ctx); err != nil {
		return err
	}
	n.node.SetLease(int64(n.lease))
	if _, _, err := n.node.Load(ctx); err != nil {
		return err
	}
	return n.node.Register(ctx)
}

// allocate is Allocate, with a new session when the node finds itself fenced.
func (n *simNode) allocate(ctx context.Context, req allocator.Request) (*allocator.Assignment, error) {
	n.renewMu.Lock()
	lease := int64(n.lease)
	n.renewMu.Unlock()
	a, err := n.node.Allocate(ctx, req)
	if errors.Is(err, events.ErrFenced) {
		if rerr := n.renew(ctx, lease); rerr != nil {
			return nil, errors.CombineErrors(err, rerr)
		}
	}
	return a, err
}

// clientKeepAlive overrides the nodes' gRPC keep-alive pings (0: coild's, from
// internal/etcdclient: every 5 s, 3 s to answer).
var clientKeepAlive, clientKeepAliveTimeout time.Duration

// newClient is a node's etcd client: coild's (internal/etcdclient), or with the
// keep-alive set by --client-keepalive.
func newClient(endpoints []string) (*clientv3.Client, error) {
	if clientKeepAlive == 0 {
		return etcdclient.New(etcdclient.Config{Endpoints: endpoints, DialTimeout: 30 * time.Second})
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 30 * time.Second, Logger: zap.NewNop(),
		DialKeepAliveTime: clientKeepAlive, DialKeepAliveTimeout: clientKeepAliveTimeout})
	if err != nil {
		return nil, errors.Wrap(err, "etcd client")
	}
	return cli, nil
}
