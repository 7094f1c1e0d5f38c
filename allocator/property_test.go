package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"pgregory.net/rapid"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
	"github.com/coil-net/coil/readside"
)

// replayAll folds every stream of the log from #1 into a fresh state, as coild's replay
// does (readside.Replay).
func replayAll(t testing.TB, log events.Log) *projection.State {
	t.Helper()
	ctx := context.Background()
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := readside.Replay(ctx, log, readside.StreamsOf(heads, nil), rev, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// checkInvariants: no address held twice (across nodes), every held address lies in a
// block its node owns, no block owned twice (the fold refuses that), replay is
// deterministic, and folding each stream from its newest snapshot equals full replay.
func checkInvariants(t testing.TB, log events.Log, snaps map[events.Stream]uint64) {
	t.Helper()
	st := replayAll(t, log)
	h1, err := st.Hash()
	if err != nil {
		t.Fatal(err)
	}
	if h2, _ := replayAll(t, log).Hash(); h1 != h2 {
		t.Fatalf("replay not deterministic: %s vs %s", h1, h2)
	}
	holder := map[netip.Addr]string{}
	for name, n := range st.Nodes {
		for key, a := range n.Attached {
			for _, addr := range a.Addrs {
				if other, ok := holder[addr]; ok {
					t.Fatalf("address %s held twice: %s and %s/%s", addr, other, name, key.ContainerID)
				}
				holder[addr] = name + "/" + key.ContainerID
			}
			o, ok := st.Owner(a.Pool, a.Block)
			if c, claimed := st.Pools[a.Pool].ClaimOf(a.Addrs[0]); claimed && c.Node == name && c.ContainerID == key.ContainerID {
				continue // a fixed address: in any block (fixed.go)
			}
			if !ok || o.Node != name {
				t.Fatalf("%s/%s holds %v in block %s#%d owned by %+v", name, key.ContainerID, a.Addrs, a.Pool, a.Block, o)
			}
			p := st.Cluster.Pools[a.Pool]
			for _, addr := range a.Addrs {
				if b, _, ok := p.Locate(addr); !ok || b != a.Block {
					t.Fatalf("address %s is not in block %d of %s", addr, a.Block, a.Pool)
				}
			}
		}
	}
	ctx := context.Background()
	for stream, seq := range snaps {
		fromSnap := projection.NewState()
		if _, err := log.Read(ctx, stream, seq, 0, fromSnap.Apply); err != nil {
			t.Fatalf("read %s from snapshot #%d: %v", stream, seq, err)
		}
		full := projection.NewState()
		if _, err := log.Read(ctx, stream, 1, 0, full.Apply); err != nil {
			t.Fatal(err)
		}
		if a, b := fromSnap.Head(stream), full.Head(stream); a != b {
			t.Fatalf("%s: snapshot+tail head %d != replay head %d", stream, a.Seq, b.Seq)
		}
		ha, _ := fromSnap.Hash()
		hb, _ := full.Hash()
		if ha != hb {
			t.Fatalf("%s: snapshot+tail state differs from full replay", stream)
		}
	}
}

// appendSnapshot appends a Snapshot of a stream's current state, as `coilctl log snapshot` does.
func appendSnapshot(t testing.TB, log events.Log, stream events.Stream) (uint64, bool) {
	t.Helper()
	ctx := context.Background()
	st := projection.NewState()
	if _, err := log.Read(ctx, stream, 1, 0, st.Apply); err != nil {
		t.Fatal(err)
	}
	snap, err := projection.SnapshotOf(st.StreamState(stream))
	if err != nil {
		t.Fatal(err)
	}
	evs := []*events.Event{{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Actor: "snapshotter", Payload: snap}}
	v, err := log.Append(ctx, events.AppendRequest{Stream: stream, Expected: st.Head(stream), Events: evs})
	if errors.Is(err, events.ErrConflict) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return v.Seq, true
}

// TestPropertyInterleavings: random interleavings of allocations, releases, block
// releases, reloads and snapshots by three nodes keep the invariants, with pools in
// block streams, in pool streams (the legacy layout), and in pool streams split into
// block streams while the nodes work (the migration).
func TestPropertyInterleavings(t *testing.T) {
	for _, layout := range []string{"split", "legacy", "migrate"} {
		t.Run(layout, func(t *testing.T) { propertyInterleavings(t, layout) })
	}
}

func propertyInterleavings(t *testing.T, layout string) {
	t.Helper()
	rapid.Check(t, func(rt *rapid.T) {
		e := newEnv(t)
		defer e.close()
		ctx := context.Background()
		if layout != "split" {
			e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
		}
		e.pool("a", 2, "10.0.0.0/28")              // 4 blocks of 4
		e.pool("b", 1, "10.1.0.0/29,fd00:b::/125") // dual stack, 4 blocks of 2
		nodes := map[string]*allocator.Node{}
		names := []string{"n1", "n2", "n3"}
		for _, nm := range names {
			nodes[nm] = e.node(nm, nil)
		}
		held := map[string][]string{} // node -> container IDs it holds
		snaps := map[events.Stream]uint64{}
		next := 0
		steps := rapid.IntRange(10, 80).Draw(rt, "steps")
		maxOp := 9
		if layout == "migrate" {
			maxOp = 10
		}
		for range steps {
			nm := rapid.SampledFrom(names).Draw(rt, "node")
			n := nodes[nm]
			switch rapid.IntRange(0, maxOp).Draw(rt, "op") {
			case 0, 1, 2, 3:
				next++
				id := fmt.Sprintf("c%d", next)
				p := rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "pool")
				_, err := n.Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: p})
				switch {
				case err == nil:
					held[nm] = append(held[nm], id)
				case errors.Is(err, allocator.ErrExhausted):
				default:
					rt.Fatalf("allocate: %v", err)
				}
			case 4, 5, 6:
				if len(held[nm]) == 0 {
					continue
				}
				i := rapid.IntRange(0, len(held[nm])-1).Draw(rt, "victim")
				id := held[nm][i]
				held[nm] = append(held[nm][:i], held[nm][i+1:]...)
				if _, err := n.Release(ctx, id, "eth0", "test"); err != nil {
					rt.Fatalf("release: %v", err)
				}
			case 7:
				e.clock.Advance(time.Minute)
				if _, err := n.ReleaseEmptyBlocks(ctx, 30*time.Second); err != nil {
					rt.Fatalf("release blocks: %v", err)
				}
			case 8:
				// Another node's blocks change under this one: catch up by watching (here: Load).
				if _, _, err := n.Load(ctx); err != nil {
					rt.Fatal(err)
				}
			case 9:
				candidates := []events.Stream{events.ClusterStream, events.PoolStream("a"), events.PoolStream("b"), events.NodeStream(nm)}
				blocks, _, err := e.log.Streams(ctx, "block/", 0)
				if err != nil {
					rt.Fatal(err)
				}
				for s := range blocks {
					candidates = append(candidates, s)
				}
				slices.Sort(candidates)
				s := rapid.SampledFrom(candidates).Draw(rt, "snap")
				if seq, ok := appendSnapshot(t, e.log, s); ok {
					snaps[s] = seq
				}
			case 10:
				p := rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "split")
				if err := e.admin.SplitPool(ctx, p); err != nil && !errors.Is(err, allocator.ErrPoolSplit) {
					rt.Fatalf("split %s: %v", p, err)
				}
			}
		}
		checkInvariants(t, e.log, snaps)
	})
}

// ownedBy lists the blocks of pool that node owns, in the pool stream and block streams.
func ownedBy(st *projection.State, pool, node string) []uint64 {
	var out []uint64
	for i, o := range st.PoolOwners(pool) {
		if o.Node == node {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}
