package allocator

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
	"github.com/coil-net/coil/readside"
)

// DefaultAppendTimeout bounds one append: past it the request fails (CNI "try again").
const DefaultAppendTimeout = 10 * time.Second

// DefaultBlockGrace is how long an empty block stays with its node before it is released.
const DefaultBlockGrace = 5 * time.Minute

// NodeConfig configures a node's allocator.
type NodeConfig struct {
	Node  string
	Log   events.Log
	Clock events.Clock
	// AliveKey and Lease fence every append on the node's liveness key (see docs/design.md, "Fencing"):
	// the appends fail with events.ErrFenced once the lease is gone. Empty AliveKey
	// disables fencing (tests of pure allocation only).
	AliveKey string
	Lease    int64
	// MaxBatch bounds a group commit (default events.MaxBatch).
	MaxBatch int
	// AppendTimeout is a request's deadline (default DefaultAppendTimeout): from the
	// moment it is queued, the appends and reads it needs are tried (again, after
	// try-again errors of the store) until then; past it the request fails with
	// events.ErrUnavailable (CNI "try again").
	AppendTimeout time.Duration
	// AttemptTimeout bounds one try within that deadline (default DefaultAttemptTimeout).
	AttemptTimeout time.Duration
	Logger         *slog.Logger
}

// Request asks for an address for a container's interface.
type Request struct {
	ContainerID  string
	IfName       string
	Pool         string
	PodNamespace string
	PodName      string
	PodUID       string
	// Fixed asks for these addresses (at most one per family: a fixed address, see
	// fixed.go); empty for an address the node chooses.
	Fixed []netip.Addr
	// Fallbacks are pools to allocate from, in order, when Pool is disabled (the pool
	// choices the operator configured after the one that chose Pool); the first that
	// exists and is enabled serves. A fallback is not used for any other refusal.
	Fallbacks []string
}

func (r *Request) key() projection.AttachKey {
	return projection.AttachKey{ContainerID: r.ContainerID, IfName: r.IfName}
}

// Assignment is an attachment's addresses and where they come from.
type Assignment struct {
	projection.AttachKey
	projection.Assignment
	// BlockPrefixes are the prefixes of the block the addresses come from, what the
	// export table must hold for them; for a fixed address in a block the node does not
	// own, the addresses' host prefixes (/32, /128) instead.
	BlockPrefixes []netip.Prefix
}

// Node is one node's allocator: the single writer of its node stream.
type Node struct {
	cfg NodeConfig
	log *slog.Logger
	ops chan *op

	mu         sync.Mutex
	st         *projection.State
	ownedCache map[string]ownedEntry // per pool: the node's blocks at a pool-stream head
	selectors  selectorCache         // parsed node selectors, by text
	// stale is closed when a followed stream turned out to be rewritten under the node
	// (staleErr says how, events.ErrRewritten); from then on every request fails with
	// staleErr until Load reads the log again and replaces both.
	stale    chan struct{}
	staleErr error
}

type opKind int

const (
	opAlloc opKind = iota
	opRelease
	opReleaseBlocks
)

type op struct {
	kind   opKind
	req    Request
	reason string
	grace  time.Duration
	done   chan opResult
	// deadline: the caller's, or AppendTimeout after the request was queued, whichever
	// comes first. The committer does not decide a request past it, nor try its append.
	deadline time.Time
}

type opResult struct {
	asg *Assignment
	n   int
	err error
}

// NewNode returns a node allocator; call Load, then Run in a goroutine.
func NewNode(cfg NodeConfig) *Node {
	if cfg.MaxBatch <= 0 || cfg.MaxBatch > events.MaxBatch {
		cfg.MaxBatch = events.MaxBatch
	}
	if cfg.Clock == nil {
		cfg.Clock = events.SystemClock{}
	}
	if cfg.AppendTimeout <= 0 {
		cfg.AppendTimeout = DefaultAppendTimeout
	}
	if cfg.AttemptTimeout <= 0 || cfg.AttemptTimeout > cfg.AppendTimeout {
		cfg.AttemptTimeout = min(DefaultAttemptTimeout, cfg.AppendTimeout)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg, log: lg.With("node", cfg.Node), ops: make(chan *op, 4096), st: projection.NewState(), stale: make(chan struct{})}
}

func (n *Node) stream() events.Stream { return events.NodeStream(n.cfg.Node) }

func (n *Node) conditions() []events.Condition {
	if n.cfg.AliveKey == "" {
		return nil
	}
	return []events.Condition{{Key: n.cfg.AliveKey, Lease: n.cfg.Lease}}
}

// SetLease changes the lease appends are fenced on (after re-registering).
func (n *Node) SetLease(lease int64) {
	n.mu.Lock()
	n.cfg.Lease = lease
	n.mu.Unlock()
}

// Load replays the cluster stream, every pool stream and the node's own stream, all at
// one revision (and the block streams of the blocks its stream says it owns), each from its newest snapshot (events.StartSeq: the cost is the tail after
// it, and streams whose older events were archived load), replacing the in-memory state. It returns that revision and the heads
// read, to watch from.
func (n *Node) Load(ctx context.Context) (int64, map[events.Stream]uint64, error) {
	// List only the streams the node follows, all at one revision: listing every head
	// would read every other node's and every block's, O(cluster) per node start.
	var streams []events.Stream
	var rev int64
	for _, prefix := range n.WatchPrefixes() {
		heads, r, err := n.cfg.Log.Streams(ctx, prefix, rev)
		if err != nil {
			return 0, nil, errors.Wrap(err, "list streams")
		}
		rev = r
		for stream := range heads {
			if n.follows(stream) {
				streams = append(streams, stream)
			}
		}
	}
	st, err := readside.Replay(ctx, n.cfg.Log, streams, rev, func(ctx context.Context, s events.Stream) (uint64, error) {
		return events.StartSeq(ctx, n.cfg.Log, s, rev)
	})
	if err != nil {
		return 0, nil, err
	}
	if err := n.loadOwnBlocks(ctx, st, rev); err != nil {
		return 0, nil, err
	}
	after := map[events.Stream]uint64{}
	for _, s := range streams {
		after[s] = st.Head(s).Seq
	}
	n.mu.Lock()
	n.st = st
	n.ownedCache = nil
	if n.staleErr != nil {
		n.stale, n.staleErr = make(chan struct{}), nil
	}
	n.mu.Unlock()
	return rev, after, nil
}

// Stale returns a channel closed once the node found a stream it follows rewritten
// under it (its head went backwards, or its events no longer continue the node's hash
// chain: `coilctl log import --force` into a live cluster). Until Load reads the log
// again, every request fails with an error wrapping events.ErrRewritten (CNI: try
// again). Call it after Load: Load replaces the channel.
func (n *Node) Stale() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stale
}

// StaleErr is why the node went stale (wrapping events.ErrRewritten), nil if it is not.
func (n *Node) StaleErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.staleErr
}

// markStale records that a followed stream was rewritten and returns err. Caller holds n.mu.
func (n *Node) markStale(err error) error {
	if n.staleErr == nil {
		n.staleErr = err
		close(n.stale)
		n.log.Warn("a stream this node follows was rewritten under it; the log must be read again", "err", err)
	}
	return err
}

// checkHead compares a stream head found in the store with the state's: behind it, or
// at the same sequence with another hash, the stream was rewritten. Caller holds n.mu.
func (n *Node) checkHead(stream events.Stream, head events.Version) error {
	have := n.st.Head(stream)
	if head.Seq < have.Seq || (head.Seq == have.Seq && head.Hash != have.Hash) {
		return n.markStale(errors.Wrapf(events.ErrRewritten, "stream %s was rewritten: its head is now #%d (%s), this node had #%d (%s)",
			stream, head.Seq, shortHash(head.Hash), have.Seq, shortHash(have.Hash)))
	}
	return nil
}

func shortHash(h events.Hash) string { return h.String()[:12] }

// Follows reports whether the node keeps stream in its state: the cluster stream, pool
// streams and its own node stream (not other nodes' address streams, nor block streams:
// it learns of its own blocks from its own appends and of others' when it needs to).
func (n *Node) follows(stream events.Stream) bool {
	kind, _ := stream.Kind()
	return kind == "cluster" || kind == "pool" || stream == n.stream()
}

// WatchPrefixes are the stream-name prefixes the node follows.
func (n *Node) WatchPrefixes() []string {
	return []string{string(events.ClusterStream), "pool/", string(n.stream())}
}

// WatchRequest is how a node watches the log after Load (rev, after: what Load
// returned): the streams it follows, each in its own order. The node folds each stream
// on its own and guards its appends on the heads of the streams it decided from, so it
// needs no order across them; and its own appends then come back through the watch
// without etcd being asked for the other watches' progress each time (events.WatchRequest
// PerStreamOrder; in bench/scale's churn the order across streams cost the allocation
// p99 about 2x).
func (n *Node) WatchRequest(rev int64, after map[events.Stream]uint64) events.WatchRequest {
	return events.WatchRequest{Prefixes: n.WatchPrefixes(), FromRev: rev, After: after, PerStreamOrder: true}
}

// Register appends NodeRegistered with the node's lease.
func (n *Node) Register(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	ev := &events.Event{Time: n.cfg.Clock.Now(), Actor: n.cfg.Node, Payload: &events.NodeRegistered{Node: n.cfg.Node, Lease: n.cfg.Lease}}
	return n.appendOwn(ctx, []*events.Event{ev})
}

// appendOwn appends to the node stream, guarded on guards, and applies the events.
// Caller holds n.mu.
func (n *Node) appendOwn(ctx context.Context, evs []*events.Event, guards ...events.Guard) error {
	stream := n.stream()
	_, err := n.appendLog(ctx, events.AppendRequest{
		Stream: stream, Expected: n.st.Head(stream), Events: evs, Conditions: n.conditions(), Guards: guards,
	})
	if err != nil {
		if errors.Is(err, events.ErrConflict) {
			if _, cerr := n.absorb(ctx, stream, err); cerr != nil {
				if errors.Is(cerr, events.ErrRewritten) {
					return cerr
				}
				return errors.CombineErrors(err, cerr)
			}
		}
		return err // the log's error names the stream
	}
	for _, e := range evs {
		if err := n.st.Apply(e); err != nil {
			return errors.Wrap(err, "apply own event (bug)")
		}
	}
	return nil
}

// Observe folds an event seen on a watch. Events already applied are skipped; a gap
// makes the node read the stream to catch up. Streams it does not follow are ignored.
func (n *Node) Observe(ctx context.Context, e *events.Event) error {
	if !n.follows(e.Stream) {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.staleErr != nil {
		return n.staleErr
	}
	h := n.st.Head(e.Stream)
	switch {
	case e.Seq <= h.Seq:
		return nil
	case e.Seq == h.Seq+1:
		return n.st.Apply(e)
	default:
		return n.catchUp(ctx, e.Stream)
	}
}

// appendLog appends, trying again after the store's try-again errors until ctx's
// deadline or AppendTimeout (storeRetry): the committer runs on a long-lived context, and
// one append stuck on an unreachable store must not stall every later request. A try
// that timed out may still have been committed; the next one then conflicts, and the
// caller catches up and finds it (decisions are idempotent per attachment).
func (n *Node) appendLog(ctx context.Context, req events.AppendRequest) (events.Version, error) {
	var v events.Version
	err := n.storeRetry(ctx, func(ctx context.Context) error {
		var err error
		v, err = n.cfg.Log.Append(ctx, req)
		return err
	})
	return v, err
}

// absorb catches up after a conflict: with the missed events the conflict carries when
// they follow the state's head, else by reading the stream that moved (stream, or the
// guard named in the conflict). It returns that stream. Caller holds n.mu.
func (n *Node) absorb(ctx context.Context, stream events.Stream, conflict error) (events.Stream, error) {
	var ce *events.ConflictError
	if !errors.As(conflict, &ce) {
		return stream, n.catchUp(ctx, stream)
	}
	if err := n.checkHead(ce.Stream, ce.Head); err != nil {
		return ce.Stream, err
	}
	if len(ce.Missed) > 0 && ce.Missed[0].Seq == n.st.Head(ce.Stream).Seq+1 {
		for _, e := range ce.Missed {
			if err := n.st.Apply(e); err != nil {
				return ce.Stream, errors.Wrapf(err, "apply missed %s #%d", e.Stream, e.Seq)
			}
		}
		return ce.Stream, nil
	}
	return ce.Stream, n.catchUp(ctx, ce.Stream)
}

// catchUp reads a stream from the state's head, tried like an append (storeRetry): it
// runs in the committer (or under n.mu), and a read of an etcd without quorum is retried
// by the client until its context ends. A try that failed midway keeps what it applied;
// the next one reads from there. A first event that does not continue the state's head
// (its previous-hash is another) means the stream was rewritten: ErrRewritten.
// Caller holds n.mu.
func (n *Node) catchUp(ctx context.Context, stream events.Stream) error {
	err := n.storeRetry(ctx, func(ctx context.Context) error {
		have := n.st.Head(stream)
		first := true
		_, err := n.cfg.Log.Read(ctx, stream, have.Seq+1, 0, func(e *events.Event) error {
			if first {
				first = false
				if e.Prev != have.Hash {
					return n.markStale(errors.Wrapf(events.ErrRewritten, "stream %s was rewritten: #%d does not follow this node's #%d (%s)",
						stream, e.Seq, have.Seq, shortHash(have.Hash)))
				}
			}
			return n.st.Apply(e)
		})
		return err
	})
	return errors.Wrapf(err, "catch up %s", stream)
}

// Run is the committer: it takes queued requests, decides them against the state and
// commits them in batches (one append for as many as queued up while the previous append
// was in flight, at most MaxBatch). It returns when ctx ends; queued requests then fail.
func (n *Node) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case o := <-n.ops:
					o.done <- opResult{err: errors.Wrap(ErrNotRunning, "shutting down")}
				default:
					return
				}
			}
		case o := <-n.ops:
			batch := []*op{o}
		collect:
			for len(batch) < n.cfg.MaxBatch {
				select {
				case o := <-n.ops:
					batch = append(batch, o)
				default:
					break collect
				}
			}
			n.process(ctx, batch)
		}
	}
}

func (n *Node) submit(ctx context.Context, o *op) opResult {
	o.done = make(chan opResult, 1)
	o.deadline = time.Now().Add(n.cfg.AppendTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(o.deadline) {
		o.deadline = d
	}
	select {
	case n.ops <- o:
	case <-ctx.Done():
		return opResult{err: errors.Wrap(ctx.Err(), "queueing request")}
	}
	// The committer answers by the deadline unless something held it longer (a catch-up
	// of a watched event under the state's lock): then the caller stops waiting a little
	// after it, with a try-again error.
	late := time.NewTimer(time.Until(o.deadline) + answerGrace)
	defer late.Stop()
	select {
	case r := <-o.done:
		return r
	case <-ctx.Done():
		// The committer will still decide it; the idempotent retry finds the result.
		return opResult{err: errors.Wrap(ctx.Err(), "waiting for commit")}
	case <-late.C:
		return opResult{err: expired(o)}
	}
}

// Allocate returns the addresses of the container's interface, assigning them if it has
// none. It is idempotent: the same ContainerID+IfName gets the same assignment. The pool
// must exist (ErrPoolNotFound); a full pool returns ErrExhausted.
func (n *Node) Allocate(ctx context.Context, req Request) (*Assignment, error) {
	if req.ContainerID == "" || req.IfName == "" {
		return nil, errors.New("allocator: container ID and interface name are required")
	}
	r := n.submit(ctx, &op{kind: opAlloc, req: req})
	return r.asg, r.err
}

// MaxReason bounds the reason recorded with a release; a longer one is cut.
const MaxReason = 1024

// Release frees the addresses of a container's interface and returns what it held;
// releasing an unknown attachment is success and returns nil. The reason is recorded
// made valid UTF-8 and cut to MaxReason bytes, so that no reason can keep an address
// from being released.
func (n *Node) Release(ctx context.Context, containerID, ifName, reason string) (*Assignment, error) {
	reason = strings.ToValidUTF8(reason, "\uFFFD")
	if len(reason) > MaxReason {
		reason = strings.ToValidUTF8(reason[:MaxReason-3], "") + "..."
	}
	r := n.submit(ctx, &op{kind: opRelease, req: Request{ContainerID: containerID, IfName: ifName}, reason: reason})
	return r.asg, r.err
}

// ReleaseEmptyBlocks gives back blocks that have been empty for at least grace and
// returns how many it released.
func (n *Node) ReleaseEmptyBlocks(ctx context.Context, grace time.Duration) (int, error) {
	r := n.submit(ctx, &op{kind: opReleaseBlocks, grace: grace})
	return r.n, r.err
}

// pending is the batch being built: its events and who waits for them (nobody for the
// NodeBlockAdded of a block it takes), and the blocks of split pools it takes.
type pending struct {
	evs     []*events.Event
	bytes   int // stored size of evs: a batch stays within events.MaxBatchBytes
	waiters [][]*op
	asgs    []*Assignment
	keys    map[projection.AttachKey]int
	held    map[netip.Addr]bool
	last    map[string]netip.Addr
	inBlock map[projection.BlockRef]int
	// pools are the pools the batch hands out addresses of: its append is guarded on
	// their streams' heads, so a fixed-address claim committed meanwhile is seen first.
	pools map[string]bool

	takes     map[projection.BlockRef]bool
	takeList  []take
	takeSizes []int // stored size of each take's NodeBlockAdded
	// collisions counts the takes of this batch's requests that lost to another node
	// (over redecisions); refreshed, the pools whose block streams it read meanwhile.
	collisions int
	refreshed  map[string]bool
}

func newPending(collisions int) *pending {
	return &pending{keys: map[projection.AttachKey]int{}, held: map[netip.Addr]bool{}, last: map[string]netip.Addr{}, inBlock: map[projection.BlockRef]int{},
		pools: map[string]bool{}, takes: map[projection.BlockRef]bool{}, collisions: collisions}
}

// full reports whether the batch cannot take one more request: a request adds an
// address event and may take a block (an event in the node stream, an event and a head
// in the block's stream).
func (p *pending) full(maxBatch int) bool {
	return len(p.evs) >= maxBatch || len(p.evs)+2+3*len(p.takeList)+4 > events.MaxOps
}

func (n *Node) process(ctx context.Context, ops []*op) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.processLocked(ctx, ops, 0, 0)
}

// maxRedecide bounds how often a batch is decided again after its append lost a race
// (someone else appended to this node's stream: a snapshot, or an operator's reclaim).
const maxRedecide = 3

func (n *Node) processLocked(ctx context.Context, ops []*op, depth, collisions int) {
	if n.staleErr != nil {
		for _, o := range ops {
			o.done <- opResult{err: errors.Wrap(n.staleErr, "waiting for the log to be read again")}
		}
		return
	}
	p := newPending(collisions)
	flush := func() {
		if retry, d, c := n.commit(ctx, p, depth); len(retry) > 0 {
			n.processLocked(ctx, retry, d, c)
		}
		p = newPending(collisions)
	}
	for _, o := range ops {
		if n.staleErr != nil { // found rewritten by an earlier flush of this batch
			o.done <- opResult{err: errors.Wrap(n.staleErr, "waiting for the log to be read again")}
			continue
		}
		if !o.deadline.IsZero() && time.Now().After(o.deadline) {
			o.done <- opResult{err: expired(o)}
			continue
		}
		switch o.kind {
		case opAlloc:
			if i, ok := p.keys[o.req.key()]; ok {
				if _, rel := p.evs[i].Payload.(*events.AddressReleased); rel {
					flush() // a release of this attachment is pending: commit it first
				}
			}
			octx, cancel := context.WithDeadline(ctx, o.deadline)
			if len(o.req.Fixed) > 0 {
				// A fixed address is claimed alone: it reads other streams and appends to
				// the pool's (fixed.go).
				flush()
				n.claimFixed(octx, o)
				cancel()
				continue
			}
			if !n.decideAlloc(octx, o, p) {
				flush() // its event would take the batch past MaxBatchBytes: decide it again in the next
				n.decideAlloc(octx, o, p)
			}
			cancel()
		case opRelease:
			if _, ok := p.keys[o.req.key()]; ok {
				flush()
			}
			if a, ok := n.me().Attached[o.req.key()]; ok && n.claimOf(o.req.key(), a) != nil {
				flush() // a fixed address: its claim ends in the same append (fixed.go)
				octx, cancel := context.WithDeadline(ctx, o.deadline)
				n.releaseClaimed(octx, o)
				cancel()
				continue
			}
			if !n.decideRelease(o, p) {
				flush()
				n.decideRelease(o, p)
			}
		case opReleaseBlocks:
			flush()
			octx, cancel := context.WithDeadline(ctx, o.deadline)
			c, err := n.releaseEmptyBlocks(octx, o.grace)
			cancel()
			o.done <- opResult{n: c, err: err}
		}
		if p.full(n.cfg.MaxBatch) {
			flush()
		}
	}
	flush()
}

func (n *Node) me() *projection.Node {
	nd := n.st.Nodes[n.cfg.Node]
	if nd == nil {
		nd = projection.NewNode()
		nd.Name = n.cfg.Node
		n.st.Nodes[n.cfg.Node] = nd
	}
	return nd
}

func (n *Node) assignmentOf(key projection.AttachKey, a *projection.Assignment) *Assignment {
	out := &Assignment{AttachKey: key, Assignment: *a}
	if !n.ownsBlock(a.Pool, a.Block) {
		out.BlockPrefixes = hostPrefixes(a.Addrs) // a fixed address in another node's block (or none's)
	} else if pool := n.st.Cluster.Pools[a.Pool]; pool != nil {
		out.BlockPrefixes, _ = pool.Block(a.Block)
	}
	return out
}

// ownsBlock reports whether the node owns block index of pool. Caller holds n.mu.
func (n *Node) ownsBlock(pool string, index uint64) bool {
	_, ok := slices.BinarySearch(n.owned(pool), index)
	return ok
}

// fits measures the stored size of ev (an event of the node stream) and tells whether
// it can join the batch p. An event that cannot be stored at all (larger than an append
// may be, or not encodable) is an error for its own request only: it never joins a batch,
// so it cannot fail the requests batched with it.
func (n *Node) fits(ev *events.Event, p *pending) (int, bool, error) {
	ev.Stream = n.stream() // as Seal will: the node stream's own actor is implied
	v, err := events.Encode(ev)
	if err != nil {
		return 0, false, errors.Wrap(err, "this request cannot be recorded")
	}
	if len(v) > events.MaxBatchBytes {
		return 0, false, errors.Wrapf(events.ErrTooLarge, "this request's event takes %d bytes (an append holds at most %d)", len(v), events.MaxBatchBytes)
	}
	return len(v), len(p.evs) == 0 || p.bytes+len(v) <= events.MaxBatchBytes, nil
}

// decideAlloc decides an allocation against the state and the batch p. It returns false,
// deciding nothing, when the request's event does not fit in p (the caller flushes p and
// calls again).
func (n *Node) decideAlloc(ctx context.Context, o *op, p *pending) bool {
	key := o.req.key()
	if a, ok := n.me().Attached[key]; ok {
		o.done <- opResult{asg: n.assignmentOf(key, a)}
		return true
	}
	if i, ok := p.keys[key]; ok {
		p.waiters[i] = append(p.waiters[i], o)
		return true
	}
	pool, err := n.choosePool(ctx, &o.req)
	if err != nil {
		o.done <- opResult{err: err}
		return true
	}
	block, addrs, ok := n.nextFree(pool, p)
	took := false // a block of a split pool taken for this request (undone if it does not fit)
	if !ok {
		var idx uint64
		if !pool.Split {
			idx, err = n.acquireBlock(ctx, pool)
			if errors.Is(err, errPoolSplitMeanwhile) {
				pool = n.st.Cluster.Pools[pool.Name]
			}
		}
		if pool.Split {
			idx, err = n.decideTake(ctx, pool, p)
			took = err == nil
		}
		if err != nil {
			o.done <- opResult{err: err}
			return true
		}
		block = idx
		off, usable := pool.FirstUsable(idx)
		if !usable { // pickBlock and freeBlock skip such blocks: reserved meanwhile?
			if took {
				p.undoTake()
			}
			o.done <- opResult{err: errors.Wrapf(ErrExhausted, "block %d of pool %q has no address that is not reserved", idx, pool.Name)}
			return true
		}
		addrs, _ = pool.Addrs(idx, off)
	}
	ev := &events.Event{Time: n.cfg.Clock.Now(), Actor: n.cfg.Node, Payload: &events.AddressAssigned{
		ContainerID: o.req.ContainerID, IfName: o.req.IfName,
		PodNamespace: o.req.PodNamespace, PodName: o.req.PodName, PodUID: o.req.PodUID,
		Pool: pool.Name, Block: block, Addrs: addrs,
	}}
	size, fit, err := n.fits(ev, p)
	if (err != nil || !fit) && took {
		p.undoTake()
		_, fit, _ = n.fits(ev, p)
	}
	if err != nil {
		o.done <- opResult{err: err}
		return true
	}
	if !fit {
		return false
	}
	prefixes, _ := pool.Block(block)
	asg := &Assignment{AttachKey: key, BlockPrefixes: prefixes, Assignment: projection.Assignment{
		PodNamespace: o.req.PodNamespace, PodName: o.req.PodName, PodUID: o.req.PodUID,
		Pool: pool.Name, Block: block, Addrs: addrs, Since: ev.Time,
	}}
	p.keys[key] = len(p.evs)
	p.evs = append(p.evs, ev)
	p.waiters = append(p.waiters, []*op{o})
	p.asgs = append(p.asgs, asg)
	for _, a := range addrs {
		p.held[a] = true
	}
	p.last[pool.Name] = addrs[0]
	p.inBlock[projection.BlockRef{Pool: pool.Name, Index: block}]++
	p.pools[pool.Name] = true
	p.bytes += size
	return true
}

// decideRelease decides a release; false as decideAlloc.
func (n *Node) decideRelease(o *op, p *pending) bool {
	key := o.req.key()
	a, ok := n.me().Attached[key]
	if !ok {
		o.done <- opResult{} // unknown: success, nothing held
		return true
	}
	ev := &events.Event{Time: n.cfg.Clock.Now(), Actor: n.cfg.Node, Payload: &events.AddressReleased{
		ContainerID: key.ContainerID, IfName: key.IfName, Pool: a.Pool, Block: a.Block, Addrs: a.Addrs, Reason: o.reason,
	}}
	size, fit, err := n.fits(ev, p)
	if err != nil {
		o.done <- opResult{err: err}
		return true
	}
	if !fit {
		return false
	}
	p.bytes += size
	p.keys[key] = len(p.evs)
	p.evs = append(p.evs, ev)
	p.waiters = append(p.waiters, []*op{o})
	p.asgs = append(p.asgs, n.assignmentOf(key, a))
	return true
}

// commit appends the batch as one transaction (with the block streams of the blocks it
// takes) and answers its waiters. When the append lost a race it returns the batch's
// requests to be decided again instead, with the depth and collision count to decide
// them with: on the node stream (after catching up) up to maxRedecide times; on a block
// stream (another node took that block first: the node now knows) up to
// maxTakeRetries times; on the cluster stream (a pool changed) likewise.
func (n *Node) commit(ctx context.Context, p *pending, depth int) ([]*op, int, int) {
	if len(p.evs) == 0 {
		return nil, depth, p.collisions
	}
	deadline := batchDeadline(p)
	if deadline.IsZero() {
		deadline = time.Now().Add(n.cfg.AppendTimeout)
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var err error
	if len(p.takeList) == 0 {
		// The node decided against the reservations it knows: a reservation appended
		// since (Admin.Reserve, guarded on this stream's head in turn) aborts the append,
		// and the batch is decided again. At every level: the reservation may come with
		// the raise to level 1 the node has not seen yet. (One more compare in the
		// transaction; a cluster change costs the batches in flight one retry.) The pool
		// streams' heads guard against fixed-address claims the same way (poolGuards).
		err = n.appendOwn(ctx, p.evs, n.poolGuards(p, []events.Guard{{Stream: events.ClusterStream, Version: n.st.Head(events.ClusterStream)}})...)
	} else {
		err = n.appendTakes(ctx, p)
	}
	if err != nil && errors.Is(err, events.ErrConflict) {
		var ce *events.ConflictError
		errors.As(err, &ce)
		moved := events.Stream("")
		if ce != nil {
			moved = ce.Stream
		}
		kind, _ := moved.Kind()
		retry := func() []*op {
			var out []*op
			for _, ws := range p.waiters {
				out = append(out, ws...)
			}
			return out
		}
		switch {
		case kind == "block" && p.collisions < maxTakeRetries:
			return retry(), depth, p.collisions + 1
		case (kind == "cluster" || kind == "pool") && p.collisions < maxTakeRetries:
			return retry(), depth, p.collisions + 1
		case kind != "block" && kind != "cluster" && depth < maxRedecide:
			return retry(), depth + 1, p.collisions
		}
		err = errors.Wrap(err, "the log keeps changing under this allocator; request again")
	}
	for i, ws := range p.waiters {
		for _, o := range ws {
			if err != nil {
				o.done <- opResult{err: err}
				continue
			}
			a := *p.asgs[i]
			a.Seq = p.evs[i].Seq
			o.done <- opResult{asg: &a}
		}
	}
	return nil, depth, p.collisions
}

// appendTakes appends a batch that takes blocks of split pools: its node-stream events
// and each block's BlockAssigned in one transaction, fenced on the node's lease and
// guarded on the cluster stream (a pool deleted or changed meanwhile aborts it). On a
// conflict it catches up the stream that moved (a collision: the block stream, whose
// owner the node now knows). Caller holds n.mu.
func (n *Node) appendTakes(ctx context.Context, p *pending) error {
	stream := n.stream()
	parts := n.takeParts(p, n.cfg.Clock.Now())
	guards := []events.Guard{{Stream: events.ClusterStream, Version: n.st.Head(events.ClusterStream)}}
	for _, t := range p.takeList {
		// The pool stream may still record owners from before the split (its owners only
		// go away since): the node must have seen them all, or it could take one of them.
		ps := events.PoolStream(t.ref.Pool)
		if !slices.ContainsFunc(guards, func(g events.Guard) bool { return g.Stream == ps }) {
			guards = append(guards, events.Guard{Stream: ps, Version: n.st.Head(ps)})
		}
	}
	guards = n.poolGuards(p, guards)
	_, err := n.appendLog(ctx, events.AppendRequest{
		Stream: stream, Expected: n.st.Head(stream), Events: p.evs, Parts: parts, Conditions: n.conditions(), Guards: guards,
	})
	if err != nil {
		if errors.Is(err, events.ErrConflict) {
			if _, cerr := n.absorb(ctx, stream, err); cerr != nil {
				return errors.CombineErrors(err, cerr)
			}
		}
		return errors.Wrapf(err, "append to %s", stream)
	}
	if err := n.applyAppended(p.evs, parts); err != nil {
		return err
	}
	for _, t := range p.takeList {
		var prefixes []netip.Prefix
		if pool := n.st.Cluster.Pools[t.ref.Pool]; pool != nil {
			prefixes, _ = pool.Block(t.ref.Index)
		}
		n.log.Info("block acquired", "pool", t.ref.Pool, "block", t.ref.Index, "prefixes", prefixes)
	}
	return nil
}

// poolGuards adds to guards the heads of the streams of the pools the batch hands out
// addresses of: a fixed-address claim committed there since the node decided makes the
// append conflict, and the node decide again, skipping the claimed address (fixed.go).
// Caller holds n.mu.
func (n *Node) poolGuards(p *pending, guards []events.Guard) []events.Guard {
	for pool := range p.pools {
		ps := events.PoolStream(pool)
		if !slices.ContainsFunc(guards, func(g events.Guard) bool { return g.Stream == ps }) {
			guards = append(guards, events.Guard{Stream: ps, Version: n.st.Head(ps)})
		}
	}
	return guards
}

// nextFree finds the next free address after the last one handed out in the pool
// (next-after-last, so a just-freed address is not reused at once), over the node's
// blocks of the pool in index order, wrapping around.
func (n *Node) nextFree(pool *projection.Pool, p *pending) (uint64, []netip.Addr, bool) {
	owned := n.owned(pool.Name)
	for _, t := range p.takeList {
		if t.ref.Pool == pool.Name {
			owned = append(slices.Clone(owned), t.ref.Index)
			slices.Sort(owned)
		}
	}
	if len(owned) == 0 {
		return 0, nil, false
	}
	me := n.me()
	var claims map[netip.Addr]*projection.Claim // fixed addresses of other attachments (fixed.go)
	if b := n.st.Pools[pool.Name]; b != nil {
		claims = b.Claims
	}
	last, ok := p.last[pool.Name]
	if !ok {
		last, ok = me.Last[pool.Name]
	}
	startBlock, startOff := 0, uint64(0)
	if ok {
		if b, off, found := pool.Locate(last); found {
			i := sort.Search(len(owned), func(i int) bool { return owned[i] >= b })
			switch {
			case i < len(owned) && owned[i] == b:
				startBlock, startOff = i, off+1
			case i < len(owned):
				startBlock = i
			}
		}
	}
	size := pool.BlockSize()
	excl := pool.HasExclusions() // reserved addresses, network and broadcast addresses
	for k := 0; k <= len(owned); k++ {
		bi := (startBlock + k) % len(owned)
		ref := projection.BlockRef{Pool: pool.Name, Index: owned[bi]}
		used := p.inBlock[ref]
		if u := me.Use[ref]; u != nil {
			used += u.InUse
		}
		if uint64(used) >= size {
			continue // full: skip without probing its addresses
		}
		prefixes, ok := pool.Block(owned[bi])
		if !ok {
			continue
		}
		from := uint64(0)
		if k == 0 {
			from = startOff
		}
		to := size
		if k == len(owned) { // wrapped around to the start block: the offsets before the start
			to = startOff
		}
		for off := from; off < to; off++ {
			a := projection.AddrAt(prefixes[0], off)
			if _, held := me.Held[a]; held || p.held[a] {
				continue
			}
			if excl && pool.OffsetExcluded(prefixes, off) {
				continue
			}
			if _, claimed := claims[a]; claimed {
				continue
			}
			addrs := make([]netip.Addr, len(prefixes))
			for i, pf := range prefixes {
				addrs[i] = projection.AddrAt(pf, off)
			}
			return owned[bi], addrs, true
		}
	}
	return 0, nil, false
}

// owned returns the node's blocks of a pool in index order: those its pool stream
// records, and (in a split pool) those its node stream records; cached until either
// stream moves. Caller holds n.mu.
func (n *Node) owned(pool string) []uint64 {
	var head events.Version
	blocks := n.st.Pools[pool]
	if blocks != nil {
		head = blocks.Head()
	}
	nodeHead := n.me().Head()
	if c, ok := n.ownedCache[pool]; ok && c.head == head && c.nodeHead == nodeHead {
		return c.blocks
	}
	var list []uint64
	if blocks != nil {
		list = blocks.OwnedBy(n.cfg.Node)
	}
	if split := n.splitOwned(pool); len(split) > 0 {
		list = append(list, split...)
		sort.Slice(list, func(i, j int) bool { return list[i] < list[j] })
	}
	if n.ownedCache == nil {
		n.ownedCache = map[string]ownedEntry{}
	}
	n.ownedCache[pool] = ownedEntry{head: head, nodeHead: nodeHead, blocks: list}
	return list
}

type ownedEntry struct {
	head, nodeHead events.Version
	blocks         []uint64
}

// errPoolSplitMeanwhile: the pool got block streams while acquireBlock tried to take a
// block in its pool stream; the take goes to a block stream instead.
var errPoolSplitMeanwhile = errors.New("allocator: pool split meanwhile")

// acquireBlock takes the lowest free block of a pool without block streams, retrying
// with jitter when another node wins the race for it.
func (n *Node) acquireBlock(ctx context.Context, pool *projection.Pool) (uint64, error) {
	stream := events.PoolStream(pool.Name)
	mine := map[uint64]bool{}
	if b := n.st.Pools[pool.Name]; b != nil {
		for _, idx := range b.OwnedBy(n.cfg.Node) {
			mine[idx] = true
		}
	}
	var bo backoff
	for {
		blocks := n.st.Pools[pool.Name]
		if blocks == nil {
			blocks = projection.NewBlocks()
			n.st.Pools[pool.Name] = blocks
		}
		// A block of ours that was not ours before a conflict comes from an earlier
		// append whose outcome was unknown (it timed out, yet committed): use it, it is
		// empty, rather than take a second block.
		for _, idx := range blocks.OwnedBy(n.cfg.Node) {
			if !mine[idx] {
				return idx, nil
			}
		}
		idx, ok := freeBlock(pool, blocks, bo.n)
		if !ok {
			return 0, exhausted(pool, blocks.Owners)
		}
		ev := &events.Event{Time: n.cfg.Clock.Now(), Actor: n.cfg.Node, Payload: &events.BlockAssigned{Index: idx, Node: n.cfg.Node}}
		_, err := n.appendLog(ctx, events.AppendRequest{
			Stream:     stream,
			Expected:   n.st.Head(stream),
			Events:     []*events.Event{ev},
			Conditions: n.conditions(),
			Guards:     []events.Guard{{Stream: events.ClusterStream, Version: n.st.Head(events.ClusterStream)}},
		})
		if err == nil {
			if err = blocks.Apply(ev); err != nil {
				return 0, errors.Wrap(err, "apply own block event (bug)")
			}
			prefixes, _ := pool.Block(idx)
			n.log.Info("block acquired", "pool", pool.Name, "block", idx, "prefixes", prefixes)
			return idx, nil
		}
		if !errors.Is(err, events.ErrConflict) {
			return 0, errors.Wrapf(err, "acquire block %d of pool %q", idx, pool.Name)
		}
		moved, err := n.absorb(ctx, stream, err)
		if err != nil {
			return 0, err
		}
		if moved == events.ClusterStream {
			p := n.st.Cluster.Pools[pool.Name]
			switch {
			case p == nil:
				return 0, errors.Wrapf(ErrPoolNotFound, "pool %q was deleted", pool.Name)
			case p.Split:
				return 0, errPoolSplitMeanwhile
			}
			pool = p
		}
		if err := bo.wait(ctx); err != nil {
			return 0, errors.Wrapf(err, "acquire a block of pool %q", pool.Name)
		}
	}
}

// freeBlock picks the lowest free block on the first attempt. After lost races it picks
// at random among the lowest few free blocks (up to 8), so contending nodes stop
// colliding on the same index while blocks still fill from the bottom. The search starts
// at the pool state's hint (no free block below it), so it does not walk the owned
// blocks at the bottom of a pool again for every block taken. Blocks whose every address
// is reserved are skipped.
func freeBlock(pool *projection.Pool, b *projection.Blocks, attempt int) (uint64, bool) {
	spread := min(attempt+1, 8)
	total := pool.NumBlocks()
	var cands []uint64
	for i := b.FirstFreeHint(); i < total && len(cands) < spread; i++ {
		if _, taken := b.Owners[i]; !taken && !pool.BlockExcluded(i) {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return 0, false
	}
	return cands[rand.IntN(len(cands))], true
}

func exhausted(pool *projection.Pool, owners map[uint64]projection.Owner) error {
	per := map[string]int{}
	for _, o := range owners {
		per[o.Node]++
	}
	var parts []string
	for _, nd := range slices.Sorted(maps.Keys(per)) {
		parts = append(parts, fmt.Sprintf("%s: %d", nd, per[nd]))
	}
	if len(pool.Reserved) > 0 {
		return errors.Wrapf(ErrExhausted, "pool %q has no free block: %d of its %d blocks of %d addresses are owned (%s), the others wholly reserved (coilctl pool show %s); add a subnet with `coilctl pool add-subnet %s SUBNET`, unreserve or free addresses",
			pool.Name, len(owners), pool.NumBlocks(), pool.BlockSize(), strings.Join(parts, ", "), pool.Name, pool.Name)
	}
	return errors.Wrapf(ErrExhausted, "pool %q has no free block: all %d blocks of %d addresses are owned (%s); add a subnet with `coilctl pool add-subnet %s SUBNET` or free addresses",
		pool.Name, pool.NumBlocks(), pool.BlockSize(), strings.Join(parts, ", "), pool.Name)
}

// graceFor is how long an empty block of pool stays with the node, and the reason its
// release records: grace, except for a pool the node may no longer take addresses from
// (disabled, or its node selector no longer matches the node), whose empty blocks go back
// at once, so that `coilctl pool delete` succeeds once the pool holds no address.
func (n *Node) graceFor(pool string, grace time.Duration) (time.Duration, string) {
	if p := n.st.Cluster.Pools[pool]; p != nil {
		if err := n.usable(p); err != nil {
			if p.Disabled {
				return 0, "empty, pool disabled"
			}
			return 0, "empty, node not selected by the pool"
		}
	}
	return grace, "empty for " + grace.String()
}

// releaseEmptyBlocks appends BlockReleased for the node's blocks that have been empty for
// at least grace. Caller holds n.mu (it runs in the committer).
func (n *Node) releaseEmptyBlocks(ctx context.Context, grace time.Duration) (int, error) {
	now := n.cfg.Clock.Now()
	me := n.me()
	total := 0
	for _, name := range slices.Sorted(maps.Keys(n.st.Pools)) {
		blocks := n.st.Pools[name]
		poolGrace, reason := n.graceFor(name, grace)
		var evs []*events.Event
		for _, idx := range blocks.OwnedBy(n.cfg.Node) {
			since := blocks.Owners[idx].Since
			if u := me.Use[projection.BlockRef{Pool: name, Index: idx}]; u != nil {
				if u.InUse > 0 {
					continue
				}
				if u.EmptySince.After(since) {
					since = u.EmptySince
				}
			}
			if now.Sub(since) < poolGrace || len(evs) == events.MaxBatch {
				continue
			}
			evs = append(evs, &events.Event{Time: now, Actor: n.cfg.Node, Payload: &events.BlockReleased{
				Index: idx, Node: n.cfg.Node, Reason: reason,
			}})
		}
		if len(evs) == 0 {
			continue
		}
		stream := events.PoolStream(name)
		_, err := n.appendLog(ctx, events.AppendRequest{
			Stream: stream, Expected: n.st.Head(stream), Events: evs, Conditions: n.conditions(),
		})
		if errors.Is(err, events.ErrConflict) {
			// Another node took a block meanwhile: catch up; the next round releases these.
			if _, cerr := n.absorb(ctx, stream, err); cerr != nil {
				return total, cerr
			}
			continue
		}
		if err != nil {
			return total, errors.Wrapf(err, "release empty blocks of pool %q", name)
		}
		for _, e := range evs {
			if err := blocks.Apply(e); err != nil {
				return total, errors.Wrap(err, "apply own block event (bug)")
			}
		}
		total += len(evs)
		n.log.Info("empty blocks released", "pool", name, "count", len(evs))
	}
	// Blocks of split pools: their own streams and the node's, in one append per chunk.
	var refs []projection.BlockRef
	for ref, since := range me.Blocks {
		if u := me.Use[ref]; u != nil {
			if u.InUse > 0 {
				continue
			}
			if u.EmptySince.After(since) {
				since = u.EmptySince
			}
		}
		if g, _ := n.graceFor(ref.Pool, grace); now.Sub(since) >= g {
			refs = append(refs, ref)
		}
	}
	if len(refs) == 0 {
		return total, nil
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Pool != refs[j].Pool {
			return refs[i].Pool < refs[j].Pool
		}
		return refs[i].Index < refs[j].Index
	})
	k, err := n.releaseSplitBlocks(ctx, refs, "empty for "+grace.String())
	if k > 0 {
		n.log.Info("empty blocks released", "count", k)
	}
	return total + k, err
}
