package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/projection"
)

// TestWidePools: IPv6 pools of the sizes people plan, a /48 or a /64 with blocks of 6 to
// 8 bits (up to 2^58 blocks numbered), in both layouts: nodes take blocks, a node fills
// one and takes the next, every address lies in its block and locates back to it, a
// released block is taken again, a restarted node finds its blocks, and the log replays
// deterministically. Block streams start at a hash of the node's name over all the
// numbered blocks, so their indexes pass 2^32.
func TestWidePools(t *testing.T) {
	for _, tc := range []struct {
		subnet string
		bits   uint8
	}{
		{"fd00:c011::/48", 6}, {"fd00:c011::/48", 8}, {"fd00:c011:0:1::/64", 6}, {"fd00:c011:0:1::/64", 7}, {"fd00:c011:0:1::/64", 8},
	} {
		for _, layout := range []string{"pool-stream", "block-streams"} {
			t.Run(fmt.Sprintf("%s-%d-%s", tc.subnet, tc.bits, layout), func(t *testing.T) {
				widePool(t, tc.subnet, tc.bits, layout == "block-streams")
			})
		}
	}
}

func widePool(t *testing.T, subnet string, bits uint8, split bool) {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t)
	if !split {
		e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
	}
	e.pool("v6", bits, subnet)
	c, err := e.admin.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Level < events.Level1 {
		t.Fatalf("a pool of %s with blocks of %d bits left the cluster at level %d", subnet, bits, c.Level)
	}
	p := c.Pools["v6"]
	sub := pfx(subnet)
	if want := uint64(1) << min(128-sub.Bits()-int(bits), projection.MaxBlockIndexBits); p.NumBlocks() != want {
		t.Fatalf("pool numbers %d blocks, want %d", p.NumBlocks(), want)
	}
	check := func(who string, a *allocator.Assignment) {
		t.Helper()
		if len(a.Addrs) != 1 || len(a.BlockPrefixes) != 1 {
			t.Fatalf("%s: %+v", who, a)
		}
		bp := a.BlockPrefixes[0]
		if !sub.Contains(a.Addrs[0]) || !bp.Contains(a.Addrs[0]) || bp.Bits() != 128-int(bits) || !sub.Contains(bp.Addr()) {
			t.Fatalf("%s: address %s in block %s (#%d), pool subnet %s", who, a.Addrs[0], bp, a.Block, sub)
		}
		if idx, _, ok := p.Locate(a.Addrs[0]); !ok || idx != a.Block {
			t.Fatalf("%s: Locate(%s) = %d, %v; the assignment says block %d", who, a.Addrs[0], idx, ok, a.Block)
		}
	}
	// Twelve nodes take a block each; the first fills its block and takes a second one.
	nodes := map[string]*allocator.Node{}
	blocks := map[netip.Prefix]string{}
	var wide bool
	for i := range 12 {
		name := fmt.Sprintf("node-%02d", i)
		n := e.node(name, nil)
		nodes[name] = n
		a := alloc(t, n, name+"-c0", "v6")
		check(name, a)
		if prev, dup := blocks[a.BlockPrefixes[0]]; dup {
			t.Fatalf("block %s of %s and %s", a.BlockPrefixes[0], prev, name)
		}
		blocks[a.BlockPrefixes[0]] = name
		wide = wide || a.Block >= 1<<32
	}
	if split && !wide {
		t.Fatal("no block index of a block-streams pool passed 2^32: the hash start does not spread over the pool")
	}
	first := nodes["node-00"]
	var last *allocator.Assignment
	for k := 1; k <= 1<<bits; k++ {
		last = alloc(t, first, fmt.Sprintf("node-00-c%d", k), "v6")
		check("node-00", last)
	}
	if got := first.Blocks(); len(got) != 2 {
		t.Fatalf("node-00 owns %d blocks after %d addresses, want 2", len(got), 1<<bits+1)
	}
	// Release: node-05 gives its address and then its block back; the block is taken again
	// (the pool-stream layout takes the lowest free block, block streams the node's hash
	// start: both the block just released).
	n5 := nodes["node-05"]
	released := n5.Blocks()[0]
	if _, err := n5.Release(ctx, "node-05-c0", "eth0", "gone"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	freed := 0
	for try := 0; try < 3 && freed == 0; try++ { // a pool stream that moved meanwhile: caught up, released next round
		k, err := n5.ReleaseEmptyBlocks(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		freed += k
	}
	if freed != 1 {
		t.Fatalf("release empty blocks: %d", freed)
	}
	taker := n5
	if !split {
		taker = e.node("node-late", nil)
		if released.Index > 11 {
			t.Fatalf("pool-stream layout: node-05 had block %d, not among the lowest", released.Index)
		}
	}
	again := alloc(t, taker, "late-c0", "v6")
	check("late", again)
	if again.Block != released.Index {
		t.Fatalf("after the release block %d was taken, want the released %d", again.Block, released.Index)
	}
	checkInvariants(t, e.log, nil)
	// A restarted node finds its two blocks.
	want := first.Blocks()
	e.close()
	restarted := e.node("node-00", nil)
	got := restarted.Blocks()
	if len(got) != 2 || got[0].Index != want[0].Index || got[1].Index != want[1].Index || got[1].Prefixes[0] != want[1].Prefixes[0] {
		t.Fatalf("after a restart node-00 owns %+v, before %+v", got, want)
	}
}

// TestWidePoolEtcd: a /64 pool with blocks of 8 bits and block streams on a real etcd:
// stream keys "block/v6/INDEX" with indexes past 2^32, read back by a restarted node and
// by a full replay, and deleted once empty.
func TestWidePoolEtcd(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t)
	log := events.NewEtcdLog(c.Client(t), events.EtcdConfig{Prefix: "/coil/"})
	admin := &allocator.Admin{Log: log, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(ctx, pool(t, "v6", 8, "fd00:c011:0:1::/64"), allocator.BlockStreams()); err != nil {
		t.Fatal(err)
	}
	n, _, _ := etcdNode(t, ctx, c, "node-a", 0)
	a := alloc(t, n, "c1", "v6")
	if a.Block < 1<<32 {
		t.Fatalf("block %d: want an index past 2^32 (node-a's hash start)", a.Block)
	}
	heads, _, err := log.Streams(ctx, allocator.BlockStreamsPrefix("v6"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := heads[events.BlockStream("v6", a.Block)]; !ok || len(heads) != 1 {
		t.Fatalf("block streams %v, want %s", heads, events.BlockStream("v6", a.Block))
	}
	st := replayAll(t, log)
	if o, ok := st.Owner("v6", a.Block); !ok || o.Node != "node-a" {
		t.Fatalf("replayed owner of block %d: %+v, %v", a.Block, o, ok)
	}
	if _, err := n.Release(ctx, "c1", "eth0", "gone"); err != nil {
		t.Fatal(err)
	}
	if k, err := n.ReleaseEmptyBlocks(ctx, 0); err != nil || k != 1 {
		t.Fatalf("release empty blocks: %d, %v", k, err)
	}
	if err := admin.DeletePool(ctx, "v6"); err != nil {
		t.Fatal(err)
	}
}

// TestWidePoolProportional: what a node holds of a pool, and what replaying it costs,
// grows with the blocks in use, not with the blocks the pool numbers: the same
// allocations in a /112 pool (256 blocks) and in a /64 pool (2^56 blocks) leave states
// of the same shape and replay with the same number of heap allocations.
func TestWidePoolProportional(t *testing.T) {
	type result struct {
		owners      int
		stateBytes  int
		replayAlloc float64
	}
	run := func(subnet string) result {
		e := newEnv(t)
		e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
		e.pool("p", 8, subnet)
		for i := range 20 {
			n := e.node(fmt.Sprintf("node-%02d", i), nil)
			for k := range 3 {
				alloc(t, n, fmt.Sprintf("n%d-c%d", i, k), "p")
			}
		}
		e.close()
		st := replayAll(t, e.log)
		snap, err := projection.SnapshotOf(st.Pools["p"])
		if err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(5, func() { replayAll(t, e.log) })
		return result{owners: len(st.Pools["p"].Owners), stateBytes: len(snap.State), replayAlloc: allocs}
	}
	small, wide := run("fd00:1::/112"), run("fd00:c011:0:1::/64")
	if small.owners != 20 || wide.owners != 20 {
		t.Fatalf("owners: /112 %d, /64 %d; want 20 each", small.owners, wide.owners)
	}
	if small.stateBytes != wide.stateBytes {
		t.Fatalf("pool state: /112 %d bytes, /64 %d bytes; want the same (blocks 0-19 in both)", small.stateBytes, wide.stateBytes)
	}
	if wide.replayAlloc > small.replayAlloc*1.05+50 {
		t.Fatalf("replay: /64 pool %.0f allocations, /112 pool %.0f: grows with the blocks possible", wide.replayAlloc, small.replayAlloc)
	}
}

// TestWidePoolNeedsLevel1: a pool with a subnet of more than 2^24 blocks is refused while
// a coild of a release before feature levels is live (it holds block indexes in 32 bits)
// and nothing is written; pools of the old sizes are still made; once the old coild is
// gone the same command raises the level and makes the pool.
func TestWidePoolNeedsLevel1(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli, log, admin := startEtcdAdmin(t)
	old := allocatortest.Start(t, cli, log, "n-old", allocatortest.Options{Prefix: "/coil/", AliveValue: "n-old"})
	t.Cleanup(old.Kill)

	err := admin.CreatePool(ctx, pool(t, "v6", 8, "fd00:c011::/48"))
	if !errors.Is(err, allocator.ErrLevel) || !strings.Contains(err.Error(), `pool "v6": subnet fd00:c011::/48 of more than 2^24 blocks needs cluster feature level 1`) ||
		!strings.Contains(err.Error(), "n-old") {
		t.Fatalf("wide pool with an old coild live: %v", err)
	}
	if err = admin.CreatePool(ctx, pool(t, "small", 8, "fd00:1::/104")); err != nil { // 2^16 blocks: as before
		t.Fatal(err)
	}
	if err = admin.AddSubnet(ctx, "small", events.Subnet{IPv6: pfx("fd00:2::/64")}); !errors.Is(err, allocator.ErrLevel) {
		t.Fatalf("wide subnet added with an old coild live: %v", err)
	}
	cl, err := admin.Cluster(ctx)
	if err != nil || cl.Level != events.LevelBase || len(cl.Pools) != 1 || len(cl.Pools["small"].Subnets) != 1 {
		t.Fatalf("after the refusals: level %d, pools %v, %v", cl.Level, cl.Pools, err)
	}
	old.Kill()
	if err = admin.CreatePool(ctx, pool(t, "v6", 8, "fd00:c011::/48")); err != nil {
		t.Fatalf("once the old coild is gone: %v", err)
	}
	if err = admin.AddSubnet(ctx, "small", events.Subnet{IPv6: pfx("fd00:2::/64")}); err != nil {
		t.Fatal(err)
	}
	if cl, err = admin.Cluster(ctx); err != nil || cl.Level != events.Level1 || cl.Pools["small"].NumBlocks() != 1<<16+1<<56 {
		t.Fatalf("level %d, small pool %+v, %v", cl.Level, cl.Pools["small"], err)
	}
}
