package allocator

import (
	"context"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// Block streams (docs/design.md, "Block streams"): in a split pool each block has an
// ownership stream of its own, block/POOL/INDEX. A node takes a block by creating (or
// continuing, after a release) that stream with BlockAssigned, in the same transaction
// as the NodeBlockAdded and the first AddressAssigned of the block in its own node
// stream; two nodes collide only when they pick the same index. A node starts its search
// at a hash of its name, so nodes spread over the pool, and it does not follow other
// nodes' block streams: what it knows of them comes from its own collisions and, when
// those keep happening (a pool filling up), from reading the pool's block streams.

// maxTakeRetries bounds how often one batch is decided again after its block take
// collided with another node's.
const maxTakeRetries = MaxRetries

// refreshAfter is how many collisions in one batch make the node read the pool's block
// streams instead of probing further.
const refreshAfter = 3

// take is a block the pending batch takes: its stream's expected head.
type take struct {
	ref      projection.BlockRef
	expected events.Version
}

// hashStart is where a node starts looking for a free block of a pool: a hash of its
// name, so nodes booting together spread over the pool instead of racing for index 0.
func hashStart(node string, total uint64) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	return h.Sum64() % total
}

// splitOwned lists the node's own blocks of a split pool from its node stream.
// Caller holds n.mu.
func (n *Node) splitOwned(pool string) []uint64 {
	var out []uint64
	for ref := range n.me().Blocks {
		if ref.Pool == pool {
			out = append(out, ref.Index)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// knownTaken reports whether the node knows block idx of pool to be owned (by anyone)
// or taken by the pending batch. What it knows of other nodes' blocks may be stale:
// a block it believes owned may have been released since (it just is not picked), a
// block it believes free may have been taken (the take collides and the node learns).
func (n *Node) knownTaken(pool string, idx uint64, p *pending) bool {
	ref := projection.BlockRef{Pool: pool, Index: idx}
	if p.takes[ref] {
		return true
	}
	if _, ok := n.me().Blocks[ref]; ok {
		return true
	}
	if b := n.st.BlockStreams[ref]; b != nil {
		if _, ok := b.Owners[idx]; ok {
			return true
		}
	}
	if b := n.st.Pools[pool]; b != nil {
		if _, ok := b.Owners[idx]; ok {
			return true // owned in the pool stream since before the split
		}
	}
	return false
}

// pickBlock chooses a block of a split pool for the pending batch to take: the first
// block not known to be taken from the node's hash start; after collisions, one at
// random among the first few (so nodes that collided do not collide again); after
// refreshAfter collisions, or when every block looks taken, it first reads the pool's
// block streams. It returns ErrExhausted only when that read finds no free block.
// Caller holds n.mu.
func (n *Node) pickBlock(ctx context.Context, pool *projection.Pool, p *pending) (uint64, error) {
	total := pool.NumBlocks()
	if p.collisions >= refreshAfter && !p.refreshed[pool.Name] {
		if err := n.refreshPool(ctx, pool.Name, p); err != nil {
			return 0, err
		}
	}
	for {
		if total > 0 {
			want := 1 << min(p.collisions, 6)
			start := hashStart(n.cfg.Node, total)
			var cands []uint64
			for j := uint64(0); j < total && len(cands) < want; j++ {
				if idx := (start + j) % total; !n.knownTaken(pool.Name, idx, p) && !pool.BlockExcluded(idx) {
					cands = append(cands, idx)
				}
			}
			if len(cands) > 0 {
				return cands[rand.IntN(len(cands))], nil
			}
		}
		if p.refreshed[pool.Name] {
			return 0, exhausted(pool, n.st.PoolOwners(pool.Name))
		}
		if err := n.refreshPool(ctx, pool.Name, p); err != nil {
			return 0, err
		}
	}
}

// refreshPool reads the block streams of a pool that moved since the node last saw them
// (all of them, the first time), and catches up the pool stream, at one revision.
// Caller holds n.mu.
func (n *Node) refreshPool(ctx context.Context, pool string, p *pending) error {
	if err := n.readPool(ctx, pool); err != nil {
		return errors.Wrapf(err, "read the block streams of pool %q", pool)
	}
	if p.refreshed == nil {
		p.refreshed = map[string]bool{}
	}
	p.refreshed[pool] = true
	return nil
}

// readPool reads the block streams of a pool that moved since the node last saw them,
// at one revision, and catches up the pool stream. Caller holds n.mu.
func (n *Node) readPool(ctx context.Context, pool string) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.AppendTimeout)
	defer cancel()
	prefix := string(events.BlockStream(pool, 0))
	prefix = prefix[:len(prefix)-1]
	heads, rev, err := n.cfg.Log.Streams(ctx, prefix, 0)
	if err != nil {
		return err
	}
	var stale []events.Stream
	for s, v := range heads {
		if n.st.Head(s) != v {
			stale = append(stale, s)
		}
	}
	if len(stale) > readPrefixOver {
		// Many to read (the first time, or a pool that changed a lot): all of them in one
		// walk over their keys rather than a read each; what the node has is skipped.
		if _, err := n.cfg.Log.ReadPrefix(ctx, prefix, rev, func(e *events.Event) error {
			if e.Seq <= n.st.Head(e.Stream).Seq {
				return nil
			}
			return n.st.Apply(e)
		}); err != nil {
			return err
		}
	} else if err := readStreams(ctx, n.cfg.Log, stale, rev, n.st); err != nil {
		return err
	}
	return n.catchUp(ctx, events.PoolStream(pool))
}

// readPrefixOver is how many block streams to read make one ReadPrefix cheaper than a
// Read of each (two requests apiece).
const readPrefixOver = 16

// readStreams reads streams (from each one's head in st, or from its newest snapshot
// when st has none of it) at revision rev into st, a few at a time.
func readStreams(ctx context.Context, log events.Log, streams []events.Stream, rev int64, st *projection.State) error {
	if len(streams) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type job struct {
		s    events.Stream
		from uint64 // 0: from the newest snapshot
	}
	type result struct {
		s   events.Stream
		evs []*events.Event
		err error
	}
	jobs := make([]job, len(streams))
	for i, s := range streams {
		jobs[i] = job{s: s}
		if h := st.Head(s); h.Seq > 0 {
			jobs[i].from = h.Seq + 1
		}
	}
	work := make(chan job)
	results := make(chan result)
	var wg sync.WaitGroup
	for range min(8, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				r := result{s: j.s}
				from := j.from
				if from == 0 {
					from, r.err = events.StartSeq(ctx, log, j.s, rev)
				}
				if r.err == nil {
					_, r.err = log.Read(ctx, j.s, from, rev, func(e *events.Event) error { r.evs = append(r.evs, e); return nil })
				}
				select {
				case results <- r:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		defer close(work)
		for _, j := range jobs {
			select {
			case work <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	var first error
	for r := range results {
		if r.err != nil {
			if first == nil {
				first = errors.Wrapf(r.err, "read %s", r.s)
				cancel()
			}
			continue
		}
		if first != nil {
			continue
		}
		for _, e := range r.evs {
			if err := st.Apply(e); err != nil {
				first = errors.Wrapf(err, "apply %s #%d", e.Stream, e.Seq)
				cancel()
				break
			}
		}
	}
	if first == nil && ctx.Err() != nil {
		// ctx ended (not by cancel above): workers may have dropped results, so st
		// may lack streams it was asked to read.
		return errors.Wrap(ctx.Err(), "read block streams")
	}
	return first
}

// loadOwnBlocks reads, at rev, the block streams of the blocks the node's stream says
// it owns, and checks that each says so too. Caller holds no lock (st is the node's
// fresh state, not yet published).
func (n *Node) loadOwnBlocks(ctx context.Context, st *projection.State, rev int64) error {
	me := st.Nodes[n.cfg.Node]
	if me == nil || len(me.Blocks) == 0 {
		return nil
	}
	var streams []events.Stream
	for ref := range me.Blocks {
		streams = append(streams, events.BlockStream(ref.Pool, ref.Index))
	}
	if err := readStreams(ctx, n.cfg.Log, streams, rev, st); err != nil {
		return errors.Wrap(err, "read the node's block streams")
	}
	for ref := range me.Blocks {
		var o projection.Owner
		ok := false
		if b := st.BlockStreams[ref]; b != nil {
			o, ok = b.Owners[ref.Index]
		}
		if !ok || o.Node != n.cfg.Node {
			return errors.Wrapf(events.ErrCorrupt, "%s records block %d of pool %q as its own, but %s says its owner is %q",
				events.NodeStream(n.cfg.Node), ref.Index, ref.Pool, events.BlockStream(ref.Pool, ref.Index), o.Node)
		}
	}
	return nil
}

// decideTake adds to the pending batch the take of a block of a split pool: the
// NodeBlockAdded event (before the addresses in it) and the block stream's BlockAssigned
// as a part of the same append. Caller holds n.mu.
func (n *Node) decideTake(ctx context.Context, pool *projection.Pool, p *pending) (uint64, error) {
	idx, err := n.pickBlock(ctx, pool, p)
	if err != nil {
		return 0, err
	}
	ref := projection.BlockRef{Pool: pool.Name, Index: idx}
	p.takes[ref] = true
	p.takeList = append(p.takeList, take{ref: ref, expected: n.st.Head(events.BlockStream(pool.Name, idx))})
	ev := &events.Event{Time: n.cfg.Clock.Now(), Actor: n.cfg.Node, Payload: &events.NodeBlockAdded{Pool: pool.Name, Index: idx}}
	size, _, err := n.fits(ev, p)
	if err != nil {
		return 0, err
	}
	p.evs = append(p.evs, ev)
	p.waiters = append(p.waiters, nil)
	p.asgs = append(p.asgs, nil)
	p.bytes += size
	p.takeSizes = append(p.takeSizes, size)
	return idx, nil
}

// undoTake takes back the last take of p (its request's own event did not fit in the
// batch: the request is decided again in the next one).
func (p *pending) undoTake() {
	t := p.takeList[len(p.takeList)-1]
	p.takeList = p.takeList[:len(p.takeList)-1]
	delete(p.takes, t.ref)
	p.evs = p.evs[:len(p.evs)-1]
	p.waiters = p.waiters[:len(p.waiters)-1]
	p.asgs = p.asgs[:len(p.asgs)-1]
	p.bytes -= p.takeSizes[len(p.takeSizes)-1]
	p.takeSizes = p.takeSizes[:len(p.takeSizes)-1]
}

// takeParts are the block-stream parts of the pending batch's append.
func (n *Node) takeParts(p *pending, now time.Time) []events.Part {
	parts := make([]events.Part, 0, len(p.takeList))
	for _, t := range p.takeList {
		parts = append(parts, events.Part{
			Stream: events.BlockStream(t.ref.Pool, t.ref.Index), Expected: t.expected,
			Events: []*events.Event{{Time: now, Actor: n.cfg.Node, Payload: &events.BlockAssigned{Index: t.ref.Index, Node: n.cfg.Node}}},
		})
	}
	return parts
}

// releaseSplitBlocks gives back the node's blocks of a split pool in refs: NodeBlockRemoved
// in its stream and BlockReleased in each block's stream, in one append per
// maxBlocksPerAppend blocks. It returns how many it released. Caller holds n.mu.
func (n *Node) releaseSplitBlocks(ctx context.Context, refs []projection.BlockRef, reason string) (int, error) {
	done := 0
	for len(refs) > 0 {
		chunk := refs[:min(len(refs), maxBlocksPerAppend)]
		refs = refs[len(chunk):]
		now := n.cfg.Clock.Now()
		var evs []*events.Event
		var parts []events.Part
		for _, ref := range chunk {
			evs = append(evs, &events.Event{Time: now, Actor: n.cfg.Node, Payload: &events.NodeBlockRemoved{Pool: ref.Pool, Index: ref.Index, Reason: reason}})
			parts = append(parts, events.Part{Stream: events.BlockStream(ref.Pool, ref.Index), Expected: n.st.Head(events.BlockStream(ref.Pool, ref.Index)),
				Events: []*events.Event{{Time: now, Actor: n.cfg.Node, Payload: &events.BlockReleased{Index: ref.Index, Node: n.cfg.Node, Reason: reason}}}})
		}
		stream := n.stream()
		_, err := n.appendLog(ctx, events.AppendRequest{Stream: stream, Expected: n.st.Head(stream), Events: evs, Parts: parts, Conditions: n.conditions()})
		if err != nil {
			if errors.Is(err, events.ErrConflict) {
				// Someone else wrote meanwhile (a snapshot): catch up; the next round
				// releases these.
				if _, cerr := n.absorb(ctx, stream, err); cerr != nil {
					return done, cerr
				}
				return done, nil
			}
			return done, errors.Wrap(err, "release empty blocks")
		}
		if err := n.applyAppended(evs, parts); err != nil {
			return done, err
		}
		done += len(chunk)
	}
	return done, nil
}

// maxBlocksPerAppend bounds the blocks one append releases or takes: each costs an
// event in the node stream and an event and a head in its block stream.
const maxBlocksPerAppend = (events.MaxOps - 1) / 3

// applyAppended folds the events of a committed append (node stream and parts).
// Caller holds n.mu.
func (n *Node) applyAppended(evs []*events.Event, parts []events.Part) error {
	for _, e := range evs {
		if err := n.st.Apply(e); err != nil {
			return errors.Wrap(err, "apply own event (bug)")
		}
	}
	for _, pt := range parts {
		for _, e := range pt.Events {
			if err := n.st.Apply(e); err != nil {
				return errors.Wrap(err, "apply own block event (bug)")
			}
		}
	}
	return nil
}
