package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// txnLog counts appends and conflicts.
type txnLog struct {
	events.Log
	appends, conflicts atomic.Int64
}

func (l *txnLog) Append(ctx context.Context, req events.AppendRequest) (events.Version, error) {
	l.appends.Add(1)
	v, err := l.Log.Append(ctx, req)
	if errors.Is(err, events.ErrConflict) {
		l.conflicts.Add(1)
	}
	return v, err
}

// TestSplitTakeInOneAppend: in a split pool a node's first allocation takes its block in
// the same append as the address (one transaction), records the block in its own stream
// and the owner in the block's stream, and starts at its name's hash, not at block 0.
func TestSplitTakeInOneAppend(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 2, "10.0.0.0/28") // 4 blocks of 4
	cl := &txnLog{Log: e.log}
	n := e.node("m3", cl) // hashes to block 1 of 4
	before := cl.appends.Load()
	a := alloc(t, n, "c1", "p")
	if got := cl.appends.Load() - before; got != 1 || a.Block != 1 {
		t.Fatalf("first allocation: %d appends, block %d; want 1 append, block 1", got, a.Block)
	}
	st := replayAll(t, e.log)
	if o, ok := st.Owner("p", 1); !ok || o.Node != "m3" {
		t.Fatalf("block 1 owner %+v", o)
	}
	if _, ok := st.Nodes["m3"].Blocks[projection.BlockRef{Pool: "p", Index: 1}]; !ok {
		t.Fatal("the node stream does not record the block")
	}
	if len(st.Pools) != 0 {
		t.Fatalf("a split pool wrote its pool stream: %v", st.Pools)
	}
	// The block fills before another is taken; then the next free one from the hash.
	for _, id := range []string{"c2", "c3", "c4"} {
		if b := alloc(t, n, id, "p").Block; b != 1 {
			t.Fatalf("%s in block %d, want 1", id, b)
		}
	}
	if b := alloc(t, n, "c5", "p").Block; b != 2 {
		t.Fatalf("c5 in block %d, want 2 (the next after the full one)", b)
	}
	checkInvariants(t, e.log, nil)
}

// TestSplitCollision: a node that picks a block another node took (it does not follow
// other nodes' blocks) loses once, learns the owner from the conflict and takes another
// in its next append: two transactions for its block, no error to the caller.
func TestSplitCollision(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 2, "10.0.0.0/28")
	first := e.node("m0", nil) // hashes to block 0
	cl := &txnLog{Log: e.log}
	second := e.node("m4", cl) // hashes to block 0 too, and does not see m0's take
	alloc(t, first, "c1", "p")
	before, conflicts := cl.appends.Load(), cl.conflicts.Load()
	a := alloc(t, second, "c2", "p")
	if a.Block == 0 {
		t.Fatal("second node got block 0 of the first")
	}
	if got, c := cl.appends.Load()-before, cl.conflicts.Load()-conflicts; got != 2 || c != 1 {
		t.Fatalf("second node: %d appends, %d conflicts; want 2 and 1", got, c)
	}
	checkInvariants(t, e.log, nil)
}

// TestSplitExhaustion: the pool's last block goes to one node, the next node gets a clear
// ErrExhausted (after reading the pool's block streams, not from a stale view); once a
// block is released the same node takes it.
func TestSplitExhaustion(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 2, "10.0.0.0/28")
	var nodes []*allocator.Node
	for _, nm := range []string{"m0", "m3", "m2", "m1"} { // one per block
		n := e.node(nm, nil)
		alloc(t, n, "c-"+nm, "p")
		nodes = append(nodes, n)
	}
	late := e.node("m8", nil)
	_, err := late.Allocate(context.Background(), allocator.Request{ContainerID: "x", IfName: "eth0", Pool: "p"})
	if !errors.Is(err, allocator.ErrExhausted) || !strings.Contains(err.Error(), `pool "p" has no free block: all 4 blocks of 4 addresses are owned (m0: 1, m1: 1, m2: 1, m3: 1)`) {
		t.Fatalf("allocation from a full pool: %v", err)
	}
	if _, err := nodes[1].Release(context.Background(), "c-m3", "eth0", "gone"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	if k, err := nodes[1].ReleaseEmptyBlocks(context.Background(), time.Minute); err != nil || k != 1 {
		t.Fatalf("release empty blocks: %d, %v", k, err)
	}
	if a := alloc(t, late, "x", "p"); a.Block != 1 {
		t.Fatalf("late node took block %d, want the released 1", a.Block)
	}
	checkInvariants(t, e.log, nil)
}

// TestSplitLoad: a restarted node finds its blocks in its own stream (without following
// the pool's block streams) and keeps using them.
func TestSplitLoad(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 2, "10.0.0.0/28")
	n := e.node("m3", nil)
	for _, id := range []string{"c1", "c2", "c3", "c4", "c5"} {
		alloc(t, n, id, "p")
	}
	want := n.Blocks()
	e.close()
	again := e.node("m3", nil)
	got := again.Blocks()
	if len(got) != 2 || len(want) != 2 || got[0].Index != want[0].Index || got[1].Index != want[1].Index || !got[0].Since.Equal(want[0].Since) {
		t.Fatalf("after a restart the node owns %+v, before %+v", got, want)
	}
	if b := alloc(t, again, "c6", "p").Block; b != want[1].Index {
		t.Fatalf("c6 in block %d, want %d (the node's block with room)", b, want[1].Index)
	}
	checkInvariants(t, e.log, nil)
}

// raceLog runs hook once, right before the first append to the cluster stream: what
// another writer does between a reader's read and its append.
type raceLog struct {
	events.Log
	hook func()
	done atomic.Bool
}

func (l *raceLog) Append(ctx context.Context, req events.AppendRequest) (events.Version, error) {
	if req.Stream == events.ClusterStream && l.done.CompareAndSwap(false, true) {
		l.hook()
	}
	return l.Log.Append(ctx, req)
}

// TestSplitPoolDeleteVsTake: a block taken between a pool deletion's read of the block
// streams and its append makes the deletion fail (range guard) and, read again, be
// refused as in use; a take after the deletion fails on its cluster guard with
// ErrPoolNotFound. Never both.
func TestSplitPoolDeleteVsTake(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 2, "10.0.0.0/28")
	n := e.node("m3", nil)
	rl := &raceLog{Log: e.log, hook: func() { alloc(t, n, "c1", "p") }}
	admin := &allocator.Admin{Log: rl, Clock: e.clock, Actor: "test"}
	if err := admin.DeletePool(context.Background(), "p"); !errors.Is(err, allocator.ErrPoolInUse) {
		t.Fatalf("delete with a block taken meanwhile: %v, want ErrPoolInUse", err)
	}
	// Now the other order: the node has not seen the deletion; its take is refused.
	if _, err := n.Release(context.Background(), "c1", "eth0", "x"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	if _, err := n.ReleaseEmptyBlocks(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.DeletePool(context.Background(), "p"); err != nil {
		t.Fatalf("delete of an empty pool: %v", err)
	}
	if _, err := n.Allocate(context.Background(), allocator.Request{ContainerID: "c2", IfName: "eth0", Pool: "p"}); !errors.Is(err, allocator.ErrPoolNotFound) {
		t.Fatalf("take from a deleted pool: %v, want ErrPoolNotFound", err)
	}
	st := replayAll(t, e.log)
	if len(st.PoolOwners("p")) != 0 {
		t.Fatalf("blocks owned in a deleted pool: %v", st.PoolOwners("p"))
	}
	checkInvariants(t, e.log, nil)
}

// TestMigrateLegacyPool: a pool in use in its pool stream is split: blocks owned there stay
// their owners' (used, released there), new blocks go to block streams, and a block
// released in the pool stream can then be taken in its block stream.
func TestMigrateLegacyPool(t *testing.T) {
	e := newEnv(t)
	e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
	e.pool("p", 2, "10.0.0.0/28")
	old := e.node("m1", nil) // legacy: takes the lowest free block, 0
	if b := alloc(t, old, "c1", "p").Block; b != 0 {
		t.Fatalf("legacy take of block %d", b)
	}
	if err := e.admin.SplitPool(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.SplitPool(context.Background(), "p"); !errors.Is(err, allocator.ErrPoolSplit) {
		t.Fatalf("second split: %v", err)
	}
	// The old node has not seen the split: it still fills its legacy block; its next
	// block take fails on its guard, catches up and goes to a block stream.
	for _, id := range []string{"c2", "c3", "c4"} {
		if b := alloc(t, old, id, "p").Block; b != 0 {
			t.Fatalf("%s in block %d, want 0", id, b)
		}
	}
	b5 := alloc(t, old, "c5", "p").Block
	st := replayAll(t, e.log)
	if o, _ := st.Owner("p", b5); o.Node != "m1" || st.BlockStreams[projection.BlockRef{Pool: "p", Index: b5}] == nil {
		t.Fatalf("block %d after the split: owner %+v, not in its block stream", b5, o)
	}
	// m0 hashes to block 0, owned in the pool stream: it must not take it.
	fresh := e.node("m0", nil)
	if b := alloc(t, fresh, "d1", "p").Block; b == 0 || b == b5 {
		t.Fatalf("fresh node took block %d", b)
	}
	// Block 0 emptied and released: in the pool stream, where it is recorded.
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		if _, err := old.Release(context.Background(), id, "eth0", "x"); err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(time.Hour)
	if k, err := old.ReleaseEmptyBlocks(context.Background(), time.Minute); err != nil || k != 1 {
		t.Fatalf("release: %d, %v", k, err)
	}
	st = replayAll(t, e.log)
	if _, ok := st.Pools["p"].Owners[0]; ok {
		t.Fatal("block 0 still owned in the pool stream")
	}
	// Now m4 (hash: block 0) takes block 0, in its block stream.
	if _, _, err := fresh.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	late := e.node("m4", nil)
	if b := alloc(t, late, "e1", "p").Block; b != 0 {
		t.Fatalf("m4 took block %d, want the released 0", b)
	}
	checkInvariants(t, e.log, nil)
}

// TestSplitExhaustionManyBlocks: a node that knows none of a full pool's 32 blocks reads
// them all in one walk (ReadPrefix), says exhausted, and after one is released reads just
// that block's stream and takes it.
func TestSplitExhaustionManyBlocks(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 0, "10.0.0.0/27") // 32 blocks of one address
	full := e.node("m0", nil)
	var c7 netip.Addr
	for i := range 32 {
		if a := alloc(t, full, fmt.Sprintf("c%d", i), "p"); i == 7 {
			c7 = a.Addrs[0]
		}
	}
	late := e.node("m3", nil)
	if _, err := late.Allocate(context.Background(), allocator.Request{ContainerID: "x", IfName: "eth0", Pool: "p"}); !errors.Is(err, allocator.ErrExhausted) {
		t.Fatalf("allocation from the full pool: %v", err)
	}
	if _, err := full.Release(context.Background(), "c7", "eth0", "gone"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	if k, err := full.ReleaseEmptyBlocks(context.Background(), time.Minute); err != nil || k != 1 {
		t.Fatalf("release: %d, %v", k, err)
	}
	a := alloc(t, late, "x", "p")
	if a.Addrs[0] != c7 {
		t.Fatalf("late node got %s, want the released %s", a.Addrs[0], c7)
	}
	checkInvariants(t, e.log, nil)
}
