package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// Prototypes of the block-taking designs considered for issue 13 (docs/design.md,
// "Block streams"), measured in this harness before one was built into the allocator.
// Each runs the boot scenario with real etcd transactions of the shape the design needs,
// real encoded events and hash chains (events.Seal, events.EtcdLog), the nodes' own
// clients, leases and watches; they take one block and append one AddressAssigned per
// node, as the allocator's first Allocate does. Block streams are named with a suffix
// on the pool's name ("pool/scale.b17", "pool/scale.s3") so today's stream rules accept
// them; checkLog maps them back to the pool.
//
//   - proto-blocks: one stream per block. A node starts at a hash of its name and takes
//     the block in the same transaction as its address (two streams, one transaction);
//     a block someone else created sends it to the next index. Nodes watch the cluster
//     stream and their own stream only.
//   - proto-shards: the pool stream cut into --shards streams, block i in shard i mod S;
//     a node takes in the shard its name hashes to, as today's allocator does in the one
//     pool stream (lowest free, random among the lowest few after a loss, ≤ 4 ms
//     backoff), then appends its address. Nodes watch their shard.
//   - proto-combine: flat combining on the one pool stream. A node puts a request key;
//     the first pending node (name order) appends grants for every pending request (up
//     to 127) in one transaction; the others wait for the grant on their watch of the
//     pool stream (and try themselves after 200 ms without progress).

const protoShards = 64

type protoNode struct {
	session
	clog events.Log
	c    *counters

	mu      sync.Mutex
	cluster *projection.Cluster
	me      *projection.Node
	blocks  *projection.Blocks // the shard (proto-shards) or the pool stream (proto-combine)
	bstream events.Stream
	changed chan struct{} // signalled when blocks moves
}

func hashName(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

func (h *harness) runProto(ctx context.Context) (*result, error) {
	switch h.o.design {
	case "proto-blocks", "proto-shards", "proto-combine":
	default:
		return nil, errors.Newf("--design %q: want allocator, proto-blocks, proto-shards or proto-combine", h.o.design)
	}
	if h.o.scenario != "boot" {
		return nil, errors.New("the prototypes run the boot scenario only")
	}
	res := h.res
	heap0, rss0, gr0 := memNow()
	t0 := time.Now()
	nodes := make([]*protoNode, h.o.nodes)
	sem := make(chan struct{}, h.o.startPar)
	var wg sync.WaitGroup
	var first atomic.Value
	for i := range nodes {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := h.startProto(ctx, nodeName(i))
			if err != nil {
				first.CompareAndSwap(nil, err)
				return
			}
			nodes[i] = n
		}()
	}
	wg.Wait()
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.stop()
			}
		}
	}()
	if err, ok := first.Load().(error); ok {
		return nil, err
	}
	res.SetupS = time.Since(t0).Seconds()
	heap1, rss1, gr1 := memNow()
	res.HeapKiBNode = (heap1 - heap0) / 1024 / float64(len(nodes))
	res.RSSKiBNode = (rss1 - rss0) / 1024 / float64(len(nodes))
	res.GoroutinesNode = float64(gr1-gr0) / float64(len(nodes))
	*h.c = counters{}
	etcdCPU0, cpu0 := h.etcd.cpuSeconds(), procCPU(os.Getpid())
	sctx, cancel := context.WithTimeout(ctx, h.o.timeout)
	defer cancel()
	r := bootAll(sctx, len(nodes), h.o.retryWait, func(ctx context.Context, i int) error {
		return nodes[i].bootOnce(ctx, h.o.design)
	})
	r.fill(res)
	res.EtcdCPUs = h.etcd.cpuSeconds() - etcdCPU0
	res.HarnessCPUs = procCPU(os.Getpid()) - cpu0
	res.EtcdRSSMiB = h.etcd.rssMiB()
	h.fillCounters()
	res.WatchPerNode = float64(h.c.watchEvents.Load()) / float64(len(nodes))
	if len(r.lat.d) < len(nodes) {
		res.Error = fmt.Sprintf("only %d of %d nodes got an address", len(r.lat.d), len(nodes))
	}
	for _, n := range nodes {
		if e := n.watchErr(); e != nil && res.Error == "" {
			res.Error = e.Error()
		}
	}
	if err := h.finish(ctx, res); err != nil {
		return nil, err
	}
	return res, nil
}

func (h *harness) startProto(ctx context.Context, name string) (*protoNode, error) {
	cli, err := newClient(h.etcd.endpoints)
	if err != nil {
		return nil, err
	}
	n := &protoNode{session: session{name: name, cli: cli}, c: h.c, changed: make(chan struct{}, 1),
		cluster: projection.NewCluster(), me: projection.NewNode(), blocks: projection.NewBlocks()}
	g, err := cli.Grant(ctx, int64(h.o.leaseTTL/time.Second))
	if err != nil {
		n.stop()
		return nil, err
	}
	n.lease = g.ID
	n.alive = events.NewKeys("").Alive(name)
	if _, err := cli.Put(ctx, n.alive, name, clientv3.WithLease(g.ID)); err != nil {
		n.stop()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.rctx, n.ttl = cancel, rctx, h.o.leaseTTL
	if err := n.keepAlive(g.ID); err != nil {
		n.stop()
		return nil, err
	}
	n.log = events.NewEtcdLog(cli, events.EtcdConfig{})
	n.clog = &countingLog{Log: n.log, c: h.c}
	prefixes := []string{"cluster", string(events.NodeStream(name))}
	switch h.o.design {
	case "proto-shards":
		n.bstream = events.Stream(fmt.Sprintf("pool/scale.s%d", hashName(name)%protoShards))
	case "proto-combine":
		n.bstream = events.PoolStream("scale")
	}
	after := map[events.Stream]uint64{}
	rev, err := n.log.Read(ctx, events.ClusterStream, 1, 0, n.cluster.Apply)
	if err != nil {
		n.stop()
		return nil, err
	}
	after[events.ClusterStream] = n.cluster.Head().Seq
	if n.bstream != "" {
		if _, err := n.log.Read(ctx, n.bstream, 1, rev, n.blocks.Apply); err != nil {
			n.stop()
			return nil, err
		}
		after[n.bstream] = n.blocks.Head().Seq
		prefixes = append(prefixes, string(n.bstream))
	}
	ev := &events.Event{Time: time.Now(), Actor: name, Payload: &events.NodeRegistered{Node: name, Lease: int64(g.ID)}}
	if _, err := n.log.Append(ctx, events.AppendRequest{Stream: events.NodeStream(name), Events: []*events.Event{ev}}); err != nil {
		n.stop()
		return nil, err
	}
	_ = n.me.Apply(ev)
	after[events.NodeStream(name)] = 1
	watch := n.log.Watch(rctx, events.WatchRequest{Prefixes: prefixes, FromRev: rev, After: after})
	n.watch(watch, h.c, func(e *events.Event) error { n.observe(e); return nil })
	return n, nil
}

// renew takes a new lease and liveness key after the old lease expired.
func (n *protoNode) renew(ctx context.Context) error {
	g, err := n.cli.Grant(ctx, int64(n.ttl/time.Second))
	if err != nil {
		return err
	}
	if _, err := n.cli.Put(ctx, n.alive, n.name, clientv3.WithLease(g.ID)); err != nil {
		return err
	}
	if err := n.keepAlive(g.ID); err != nil {
		return err
	}
	n.mu.Lock()
	n.lease = g.ID
	n.mu.Unlock()
	return nil
}

// observe folds a watched event into the state it belongs to (own appends come back too).
func (n *protoNode) observe(e *events.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch e.Stream {
	case events.ClusterStream:
		if e.Seq == n.cluster.Head().Seq+1 {
			_ = n.cluster.Apply(e)
		}
	case n.bstream:
		if e.Seq == n.blocks.Head().Seq+1 {
			_ = n.blocks.Apply(e)
			select {
			case n.changed <- struct{}{}:
			default:
			}
		}
	}
}

func (n *protoNode) owned() (uint64, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, o := range n.blocks.Owners {
		if o.Node == n.name {
			return i, true
		}
	}
	return 0, false
}

// absorb applies the events a conflict carries (or reads the stream).
func (n *protoNode) absorb(ctx context.Context, err error) error {
	var ce *events.ConflictError
	n.mu.Lock()
	defer n.mu.Unlock()
	if errors.As(err, &ce) && ce.Stream == n.bstream && len(ce.Missed) > 0 && ce.Missed[0].Seq == n.blocks.Head().Seq+1 {
		for _, e := range ce.Missed {
			if err := n.blocks.Apply(e); err != nil {
				return err
			}
		}
		return nil
	}
	_, rerr := n.log.Read(ctx, n.bstream, n.blocks.Head().Seq+1, 0, n.blocks.Apply)
	return rerr
}

func (n *protoNode) pool() *projection.Pool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cluster.Pools["scale"]
}

// bootOnce takes a block and appends the node's first address. After a failure it
// catches up its own stream (an append whose reply was lost may have committed) and, when
// fenced (its lease expired on a starved machine), takes a new lease, as coild would.
func (n *protoNode) bootOnce(ctx context.Context, design string) (err error) {
	defer func() {
		if err == nil {
			return
		}
		if errors.Is(err, events.ErrFenced) {
			if rerr := n.renew(ctx); rerr != nil {
				err = errors.CombineErrors(err, rerr)
			}
		}
		if _, rerr := n.log.Read(ctx, events.NodeStream(n.name), n.me.Head().Seq+1, 0, n.me.Apply); rerr == nil && len(n.me.Attached) > 0 {
			err = nil // the append whose reply was lost did commit
		}
	}()
	if len(n.me.Attached) > 0 {
		return nil
	}
	pool := n.pool()
	if pool == nil {
		return errors.New("pool scale unknown")
	}
	switch design {
	case "proto-blocks":
		return n.takeBlockStream(ctx, pool)
	case "proto-shards":
		if idx, ok := n.owned(); ok {
			return n.appendAddress(ctx, pool, idx)
		}
		idx, err := n.takeShard(ctx, pool)
		if err != nil {
			return err
		}
		return n.appendAddress(ctx, pool, idx)
	default:
		idx, err := n.takeCombined(ctx, pool)
		if err != nil {
			return err
		}
		return n.appendAddress(ctx, pool, idx)
	}
}

func (n *protoNode) addrEvent(pool *projection.Pool, idx uint64) *events.Event {
	addrs, _ := pool.Addrs(idx, 0)
	return &events.Event{Time: time.Now(), Actor: n.name, Payload: &events.AddressAssigned{
		ContainerID: fmt.Sprintf("%064x", hashName(n.name)), IfName: "eth0", PodNamespace: "default", PodName: "pod-" + n.name,
		Pool: pool.Name, Block: idx, Addrs: addrs}}
}

func (n *protoNode) appendAddress(ctx context.Context, pool *projection.Pool, idx uint64) error {
	ev := n.addrEvent(pool, idx)
	_, err := n.clog.Append(ctx, events.AppendRequest{Stream: events.NodeStream(n.name), Expected: n.me.Head(), Events: []*events.Event{ev},
		Conditions: []events.Condition{{Key: n.alive, Lease: int64(n.lease)}}})
	if err != nil {
		return err
	}
	return n.me.Apply(ev)
}

// takeBlockStream: proto-blocks. One transaction creates block idx's stream with
// BlockAssigned and appends the address to the node's stream, guarded by the cluster
// stream's head and fenced on the node's lease.
func (n *protoNode) takeBlockStream(ctx context.Context, pool *projection.Pool) error {
	total := pool.NumBlocks()
	idx := hashName(n.name) % total
	keys := events.NewKeys("")
	n.mu.Lock()
	ch := n.cluster.Head()
	n.mu.Unlock()
	for tries := uint64(0); tries < total; tries++ {
		bs := events.Stream(fmt.Sprintf("pool/scale.b%d", idx))
		bev := &events.Event{Time: time.Now(), Actor: n.name, Payload: &events.BlockAssigned{Index: idx, Node: n.name}}
		breq := events.AppendRequest{Stream: bs, Events: []*events.Event{bev}}
		aev := n.addrEvent(pool, idx)
		nreq := events.AppendRequest{Stream: events.NodeStream(n.name), Expected: n.me.Head(), Events: []*events.Event{aev}}
		bsealed, bhead, err := events.Seal(&breq)
		if err != nil {
			return err
		}
		nsealed, nhead, err := events.Seal(&nreq)
		if err != nil {
			return err
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(keys.Head(bs)), "=", 0),
			clientv3.Compare(clientv3.Value(keys.Head(nreq.Stream)), "=", string(events.EncodeHead(nreq.Expected))),
			clientv3.Compare(clientv3.LeaseValue(n.alive), "=", n.lease),
			clientv3.Compare(clientv3.Value(keys.Head(events.ClusterStream)), "=", string(events.EncodeHead(ch))),
		}
		ops := []clientv3.Op{
			clientv3.OpPut(keys.Event(bs, bsealed[0].Seq), string(bsealed[0].Value)),
			clientv3.OpPut(keys.Head(bs), string(events.EncodeHead(bhead))),
			clientv3.OpPut(keys.Event(nreq.Stream, nsealed[0].Seq), string(nsealed[0].Value)),
			clientv3.OpPut(keys.Head(nreq.Stream), string(events.EncodeHead(nhead))),
		}
		n.c.appends.Add(1)
		n.c.blockAttempts.Add(1)
		resp, err := n.cli.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(keys.Head(bs), clientv3.WithKeysOnly())).Commit()
		if err != nil {
			return err
		}
		if resp.Succeeded {
			n.c.blocksTaken.Add(1)
			n.c.events.Add(2)
			return n.me.Apply(aev)
		}
		n.c.conflicts.Add(1)
		if len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
			return errors.New("take failed on another condition")
		}
		idx = (idx + 1) % total
	}
	return errors.New("pool exhausted")
}

// takeShard: proto-shards, today's algorithm on the node's shard.
func (n *protoNode) takeShard(ctx context.Context, pool *projection.Pool) (uint64, error) {
	shard, _ := strconv.Atoi(strings.TrimPrefix(string(n.bstream), "pool/scale.s"))
	total := pool.NumBlocks()
	for attempt := 0; attempt < 64; attempt++ {
		n.mu.Lock()
		var cands []uint64
		for i := uint64(shard); i < total && len(cands) < min(attempt+1, 8); i += protoShards {
			if _, taken := n.blocks.Owners[i]; !taken {
				cands = append(cands, i)
			}
		}
		head, ch := n.blocks.Head(), n.cluster.Head()
		n.mu.Unlock()
		if len(cands) == 0 {
			return 0, errors.New("shard full")
		}
		idx := cands[rand.IntN(len(cands))]
		ev := &events.Event{Time: time.Now(), Actor: n.name, Payload: &events.BlockAssigned{Index: idx, Node: n.name}}
		_, err := n.clog.Append(ctx, events.AppendRequest{Stream: n.bstream, Expected: head, Events: []*events.Event{ev},
			Conditions: []events.Condition{{Key: n.alive, Lease: int64(n.lease)}},
			Guards:     []events.Guard{{Stream: events.ClusterStream, Version: ch}}})
		if err == nil {
			n.observe(ev)
			return idx, nil
		}
		if !errors.Is(err, events.ErrConflict) {
			return 0, err
		}
		if err := n.absorb(ctx, err); err != nil {
			return 0, err
		}
		if own, ok := n.owned(); ok {
			return own, nil
		}
		d := time.Duration(rand.Int64N(int64(250 * time.Microsecond << min(attempt, 4))))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return 0, errors.New("gave up after 64 attempts")
}

// takeCombined: proto-combine.
func (n *protoNode) takeCombined(ctx context.Context, pool *projection.Pool) (uint64, error) {
	reqPrefix := "/coil/req/scale/"
	n.c.appends.Add(1)
	n.c.blockAttempts.Add(1)
	if _, err := n.cli.Put(ctx, reqPrefix+n.name, n.name, clientv3.WithLease(n.lease)); err != nil {
		return 0, err
	}
	defer func() { _, _ = n.cli.Delete(context.WithoutCancel(ctx), reqPrefix+n.name) }()
	total := pool.NumBlocks()
	for {
		if idx, ok := n.owned(); ok {
			return idx, nil
		}
		resp, err := n.cli.Get(ctx, reqPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return 0, err
		}
		n.mu.Lock()
		has := map[string]bool{}
		for _, o := range n.blocks.Owners {
			has[o.Node] = true
		}
		var pending []string
		for _, kv := range resp.Kvs {
			if name := strings.TrimPrefix(string(kv.Key), reqPrefix); !has[name] {
				pending = append(pending, name)
			}
		}
		sort.Strings(pending)
		head, ch := n.blocks.Head(), n.cluster.Head()
		var evs []*events.Event
		next := uint64(0)
		if len(pending) > 0 && pending[0] == n.name {
			for _, name := range pending {
				if len(evs) == events.MaxBatch {
					break
				}
				for next < total {
					if _, taken := n.blocks.Owners[next]; !taken {
						break
					}
					next++
				}
				if next == total {
					break
				}
				evs = append(evs, &events.Event{Time: time.Now(), Actor: n.name, Payload: &events.BlockAssigned{Index: next, Node: name}})
				next++
			}
		}
		n.mu.Unlock()
		if len(evs) == 0 {
			// Someone else combines: wait for the pool stream to move, then look again.
			select {
			case <-n.changed:
			case <-time.After(200 * time.Millisecond): // no progress seen: look again
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			continue
		}
		n.c.blockAttempts.Add(1)
		_, err = n.clog.Append(ctx, events.AppendRequest{Stream: n.bstream, Expected: head, Events: evs,
			Conditions: []events.Condition{{Key: n.alive, Lease: int64(n.lease)}},
			Guards:     []events.Guard{{Stream: events.ClusterStream, Version: ch}}})
		if err == nil {
			for _, e := range evs {
				n.observe(e)
			}
			continue
		}
		if !errors.Is(err, events.ErrConflict) {
			return 0, err
		}
		if err := n.absorb(ctx, err); err != nil {
			return 0, err
		}
	}
}

// protoPoolName maps a prototype's block or shard stream name back to the pool.
func protoPoolName(name string) string {
	if i := strings.LastIndexByte(name, '.'); i > 0 && len(name) > i+2 && (name[i+1] == 'b' || name[i+1] == 's') {
		if _, err := strconv.Atoi(name[i+2:]); err == nil {
			return name[:i]
		}
	}
	return name
}
