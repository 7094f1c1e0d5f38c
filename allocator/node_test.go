package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
)

var leaseIDs atomic.Int64

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// countingLog counts appends per stream kind, to observe group commit.
type countingLog struct {
	events.Log
	nodeAppends atomic.Int64
}

func (c *countingLog) Append(ctx context.Context, req events.AppendRequest) (events.Version, error) {
	if k, _ := req.Stream.Kind(); k == "node" {
		c.nodeAppends.Add(1)
	}
	return c.Log.Append(ctx, req)
}

type env struct {
	t     *testing.T
	log   *events.MemLog
	clock *fakeClock
	admin *allocator.Admin
	stops []func()
	// poolOpts are the options pool creates pools with (newEnv: split pools, block
	// streams; LegacyLayout for the pool-stream layout, coilctl's default for now).
	poolOpts []allocator.PoolOption
}

func newEnv(t *testing.T) *env {
	t.Helper()
	log := events.NewMemLog()
	clock := newClock()
	e := &env{t: t, log: log, clock: clock, admin: &allocator.Admin{Log: log, Clock: clock, Actor: "test"},
		poolOpts: []allocator.PoolOption{allocator.BlockStreams()}}
	t.Cleanup(e.close)
	return e
}

// close stops the env's allocators (also run at test cleanup; idempotent).
func (e *env) close() {
	for _, f := range e.stops {
		f()
	}
	e.stops = nil
}

func (e *env) pool(name string, bits uint8, subnets ...string) {
	e.t.Helper()
	if err := e.admin.CreatePool(context.Background(), pool(e.t, name, bits, subnets...), e.poolOpts...); err != nil {
		e.t.Fatal(err)
	}
}

// node starts a node allocator fenced on a live lease key.
func (e *env) node(name string, log events.Log) *allocator.Node {
	e.t.Helper()
	if log == nil {
		log = e.log
	}
	key := "/coil/alive/" + name
	lease := leaseIDs.Add(1)
	e.log.SetLeaseKey(key, lease)
	n := allocator.NewNode(allocator.NodeConfig{Node: name, Log: log, Clock: e.clock, AliveKey: key, Lease: lease})
	e.stops = append(e.stops, allocatortest.Run(e.t, n))
	return n
}

func alloc(t *testing.T, n *allocator.Node, id, pool string) *allocator.Assignment {
	t.Helper()
	a, err := n.Allocate(context.Background(), allocator.Request{ContainerID: id, IfName: "eth0", Pool: pool, PodNamespace: "ns", PodName: "pod-" + id})
	if err != nil {
		t.Fatalf("Allocate(%s): %v", id, err)
	}
	return a
}

// TestPoolCreatedAfterLoad: a pool created after the node loaded, whose event the node
// has not observed (no watch runs here; in coild the watch may simply lag), is found by
// reading the cluster stream before the request is refused; a pool that really does not
// exist is still ErrPoolNotFound.
func TestPoolCreatedAfterLoad(t *testing.T) {
	e := newEnv(t)
	n := e.node("n1", nil)
	e.pool("late", 4, "10.9.0.0/16")
	a := alloc(t, n, "c1", "late")
	if !pfx("10.9.0.0/16").Contains(a.Addrs[0]) {
		t.Fatalf("address %v not from pool late", a.Addrs[0])
	}
	_, err := n.Allocate(context.Background(), allocator.Request{ContainerID: "c2", IfName: "eth0", Pool: "nope"})
	if !errors.Is(err, allocator.ErrPoolNotFound) {
		t.Fatalf("unknown pool: got %v, want ErrPoolNotFound", err)
	}
}

func TestAllocateIdempotentAndNextAfterLast(t *testing.T) {
	e := newEnv(t)
	e.pool("default", 2, "10.0.0.0/28") // 4 blocks of 4
	n := e.node("n1", nil)
	a1 := alloc(t, n, "c1", "default")
	if a1.Addrs[0] != netip.MustParseAddr("10.0.0.0") || a1.BlockPrefixes[0] != pfx("10.0.0.0/30") {
		t.Fatalf("first assignment = %+v", a1)
	}
	again := alloc(t, n, "c1", "default")
	if again.Addrs[0] != a1.Addrs[0] {
		t.Fatalf("second ADD of c1 got %v, want %v", again.Addrs, a1.Addrs)
	}
	a2 := alloc(t, n, "c2", "default")
	if _, err := n.Release(context.Background(), "c2", "eth0", "deleted"); err != nil {
		t.Fatal(err)
	}
	a3 := alloc(t, n, "c3", "default")
	if a3.Addrs[0] == a2.Addrs[0] {
		t.Fatalf("freed address %v handed out again at once", a2.Addrs[0])
	}
	if got, err := n.Release(context.Background(), "never", "eth0", "x"); err != nil || got != nil {
		t.Fatalf("release unknown = %v, %v; want nil, nil", got, err)
	}
	if _, ok := n.Lookup("c1", "eth0"); !ok {
		t.Fatal("c1 lost")
	}
	if _, err := n.Allocate(context.Background(), allocator.Request{ContainerID: "c9", IfName: "eth0", Pool: "nope"}); !errors.Is(err, allocator.ErrPoolNotFound) {
		t.Fatalf("unknown pool: %v", err)
	}
}

func TestDualStack(t *testing.T) {
	e := newEnv(t)
	e.pool("ds", 5, "10.1.0.0/24,fd00:1::/112")
	n := e.node("n1", nil)
	a := alloc(t, n, "c1", "ds")
	if len(a.Addrs) != 2 || !a.Addrs[0].Is4() || !a.Addrs[1].Is6() {
		t.Fatalf("dual-stack addrs = %v", a.Addrs)
	}
	if len(n.BlockPrefixes()) != 2 {
		t.Fatalf("block prefixes = %v", n.BlockPrefixes())
	}
}

func TestExhausted(t *testing.T) {
	e := newEnv(t)
	e.pool("tiny", 1, "10.0.0.0/30") // 2 blocks of 2
	n := e.node("n1", nil)
	for i := range 4 {
		alloc(t, n, fmt.Sprint("c", i), "tiny")
	}
	_, err := n.Allocate(context.Background(), allocator.Request{ContainerID: "c5", IfName: "eth0", Pool: "tiny"})
	if !errors.Is(err, allocator.ErrExhausted) || !strings.Contains(err.Error(), `pool "tiny" has no free block: all 2 blocks of 2 addresses are owned (n1: 2)`) {
		t.Fatalf("err = %v", err)
	}
	// Deleting a pool in use is refused with who holds it.
	if err := e.admin.DeletePool(context.Background(), "tiny"); !errors.Is(err, allocator.ErrPoolInUse) || !strings.Contains(err.Error(), "n1: 2") {
		t.Fatalf("DeletePool in use: %v", err)
	}
}

func TestGroupCommit(t *testing.T) {
	e := newEnv(t)
	e.pool("default", 5, "10.0.0.0/16")
	cl := &countingLog{Log: e.log}
	n := e.node("n1", cl)
	before := cl.nodeAppends.Load()
	const N = 500
	var wg sync.WaitGroup
	addrs := make([]netip.Addr, N)
	for i := range N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addrs[i] = alloc(t, n, fmt.Sprint("c", i), "default").Addrs[0]
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("address %v handed out twice", a)
		}
		seen[a] = true
	}
	appends := cl.nodeAppends.Load() - before
	if appends >= N {
		t.Fatalf("%d appends for %d concurrent allocations: no batching", appends, N)
	}
	t.Logf("%d allocations in %d appends", N, appends)
}

func TestEmptyBlockGrace(t *testing.T) {
	e := newEnv(t)
	e.pool("default", 2, "10.0.0.0/24")
	n := e.node("n1", nil)
	ctx := context.Background()
	alloc(t, n, "c1", "default")
	if _, err := n.Release(ctx, "c1", "eth0", "gone"); err != nil {
		t.Fatal(err)
	}
	if got, err := n.ReleaseEmptyBlocks(ctx, time.Minute); err != nil || got != 0 {
		t.Fatalf("released %d (%v) before the grace period", got, err)
	}
	e.clock.Advance(2 * time.Minute)
	if got, err := n.ReleaseEmptyBlocks(ctx, time.Minute); err != nil || got != 1 {
		t.Fatalf("released %d (%v) after the grace period, want 1", got, err)
	}
	if len(n.Blocks()) != 0 {
		t.Fatalf("blocks left: %v", n.Blocks())
	}
}

func TestFencing(t *testing.T) {
	e := newEnv(t)
	e.pool("default", 2, "10.0.0.0/24")
	n := e.node("n1", nil)
	alloc(t, n, "c1", "default")
	e.log.DeleteKey("/coil/alive/n1") // the lease expired
	_, err := n.Allocate(context.Background(), allocator.Request{ContainerID: "c2", IfName: "eth0", Pool: "default"})
	if !errors.Is(err, events.ErrFenced) {
		t.Fatalf("allocation after lease loss: %v", err)
	}
	e.log.SetLeaseKey("/coil/alive/n1", 99) // someone else's lease
	_, err = n.Allocate(context.Background(), allocator.Request{ContainerID: "c3", IfName: "eth0", Pool: "default"})
	if !errors.Is(err, events.ErrFenced) {
		t.Fatalf("allocation under another lease: %v", err)
	}
}

// TestReclaim, in both layouts: blocks in block streams (and the node stream's record of
// them) and blocks in the pool stream.
func TestReclaim(t *testing.T) {
	t.Run("split", func(t *testing.T) { testReclaim(t, allocator.BlockStreams()) })
	t.Run("legacy", func(t *testing.T) { testReclaim(t, allocator.LegacyLayout()) })
}

func testReclaim(t *testing.T, opts ...allocator.PoolOption) {
	t.Helper()
	e := newEnv(t)
	e.poolOpts = opts
	ctx := context.Background()
	e.pool("default", 2, "10.0.0.0/28")
	n := e.node("n1", nil)
	alloc(t, n, "c1", "default")
	alloc(t, n, "c2", "default")
	if _, err := e.admin.Reclaim(ctx, "n1", "/coil/alive/n1", "test"); !errors.Is(err, allocator.ErrNodeAlive) {
		t.Fatalf("reclaim of a live node: %v", err)
	}
	e.log.DeleteKey("/coil/alive/n1")
	res, err := e.admin.Reclaim(ctx, "n1", "/coil/alive/n1", "node deleted")
	if err != nil || res.Released != 2 || res.Reclaimed["default"] != 1 {
		t.Fatalf("reclaim = %+v, %v", res, err)
	}
	again, err := e.admin.Reclaim(ctx, "n1", "/coil/alive/n1", "again")
	if err != nil || again.Released != 0 || len(again.Reclaimed) != 0 {
		t.Fatalf("second reclaim = %+v, %v", again, err)
	}
	// n1 comes back with a new lease: it starts without the old block and takes a fresh one.
	n2 := e.node("n1", nil)
	if len(n2.Blocks()) != 0 || len(n2.Attachments()) != 0 {
		t.Fatalf("returning node still holds %v / %v", n2.Blocks(), n2.Attachments())
	}
	// The old allocator (stale state, dead lease) cannot append at all.
	if _, err := n.Allocate(ctx, allocator.Request{ContainerID: "c3", IfName: "eth0", Pool: "default"}); err == nil {
		t.Fatal("stale allocator handed out an address after reclaim")
	}
	// The reclaimed block is free for anyone, and nothing was ever held twice.
	st := replayAll(t, e.log)
	if owners := st.PoolOwners("default"); len(owners) != 0 {
		t.Fatalf("blocks owned after the reclaim: %v", owners)
	}
	if me := st.Nodes["n1"]; len(me.Blocks) != 0 {
		t.Fatalf("the node stream still records blocks: %v", me.Blocks)
	}
	alloc(t, n2, "c4", "default")
	checkInvariants(t, e.log, nil)
}
