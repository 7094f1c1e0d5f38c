package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
)

// etcdNode starts a node allocator on its own etcd client, fenced on a real lease.
func etcdNode(t testing.TB, ctx context.Context, c *etcdtest.Cluster, name string, maxBatch int) (*allocator.Node, events.Log, *clientv3.Client) {
	t.Helper()
	cli := c.Client(t)
	log := coilLog(t, cli) // closed after the node stopped (cleanups run last-in first-out)
	n := allocatortest.Start(t, cli, log, name, allocatortest.Options{Prefix: "/coil/", MaxBatch: maxBatch})
	return n.Node, log, cli
}

// Three nodes, each with its own etcd client, race for the blocks of one small pool
// until it is exhausted: every block is owned once, every address handed out once,
// every node ends with a clear "exhausted" error and converges on the same ownership.
// Both layouts: blocks in block streams (collisions per block) and in the pool stream.
func TestBlockRaceToExhaustion(t *testing.T) {
	t.Run("split", func(t *testing.T) { blockRaceToExhaustion(t, allocator.BlockStreams()) })
	t.Run("legacy", func(t *testing.T) { blockRaceToExhaustion(t, allocator.LegacyLayout()) })
}

func blockRaceToExhaustion(t *testing.T, opts ...allocator.PoolOption) {
	t.Helper()
	ctx := context.Background()
	c := etcdtest.Start(t)
	admin := &allocator.Admin{Log: events.NewEtcdLog(c.Client(t), events.EtcdConfig{Prefix: "/coil/"}), Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(ctx, pool(t, "small", 2, "10.0.0.0/26"), opts...); err != nil { // 16 blocks of 4
		t.Fatal(err)
	}
	names := []string{"n1", "n2", "n3"}
	nodes := make([]*allocator.Node, len(names))
	var logs []events.Log
	for i, nm := range names {
		var l events.Log
		nodes[i], l, _ = etcdNode(t, ctx, c, nm, 0)
		logs = append(logs, l)
	}
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	var wg sync.WaitGroup
	lastErr := make([]error, len(names))
	for i, n := range nodes {
		for w := range 4 { // concurrent requests per node
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; ; k++ {
					a, err := n.Allocate(ctx, allocator.Request{ContainerID: fmt.Sprintf("%s-%d-%d", names[i], w, k), IfName: "eth0", Pool: "small"})
					if err != nil {
						mu.Lock()
						lastErr[i] = err
						mu.Unlock()
						return
					}
					mu.Lock()
					if prev, dup := got[a.Addrs[0]]; dup {
						t.Errorf("address %s handed out to %s and %s", a.Addrs[0], prev, names[i])
					}
					got[a.Addrs[0]] = names[i]
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(got) != 64 {
		t.Fatalf("%d addresses handed out, want all 64", len(got))
	}
	for i, err := range lastErr {
		if !errors.Is(err, allocator.ErrExhausted) || !strings.Contains(err.Error(), `pool "small" has no free block: all 16 blocks of 4 addresses are owned`) {
			t.Fatalf("%s ended with %v, want a clear exhausted error", names[i], err)
		}
	}
	// Each block owned once (the fold refuses a second owner), and every node converges.
	st := replayAll(t, logs[0])
	if n := len(st.PoolOwners("small")); n != 16 {
		t.Fatalf("%d blocks owned, want 16", n)
	}
	total := 0
	for _, n := range nodes {
		total += len(n.Blocks())
		if _, _, err := n.Load(ctx); err != nil {
			t.Fatal(err)
		}
		h, _ := n.StateHash()
		_ = h
	}
	if total != 16 {
		t.Fatalf("nodes believe they own %d blocks in all, want 16", total)
	}
	checkInvariants(t, logs[0], nil)
}

// Unreachable etcd: a bounded wait, then a clear error, and nothing half-written.
func TestEtcdUnreachable(t *testing.T) {
	ctx := context.Background()
	c := etcdtest.Start(t)
	admin := &allocator.Admin{Log: events.NewEtcdLog(c.Client(t), events.EtcdConfig{Prefix: "/coil/"}), Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(ctx, pool(t, "p", 2, "10.0.0.0/26")); err != nil {
		t.Fatal(err)
	}
	n, _, _ := etcdNode(t, ctx, c, "n1", 0)
	alloc(t, n, "c1", "p")
	c.Stop()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := n.Allocate(cctx, allocator.Request{ContainerID: "c2", IfName: "eth0", Pool: "p"})
	if err == nil {
		t.Fatal("allocation succeeded with etcd down")
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("waited %s for an unreachable etcd", time.Since(start))
	}
	if !errors.Is(err, events.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	t.Logf("unreachable etcd: %v", err)
}
