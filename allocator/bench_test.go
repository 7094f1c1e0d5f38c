package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
)

// BenchmarkAllocate measures address allocations per second on one node against a
// single-member etcd with fsync on, from 64 concurrent requesters: group commit (up to
// 127 assignments per transaction) side by side with one transaction per allocation.
func BenchmarkAllocate(b *testing.B) {
	for _, mode := range []struct {
		name  string
		batch int
		// reserved: the pool skips its network and broadcast addresses and has 65
		// reservations in the blocks the node takes (the exclusion checks on ADD).
		reserved bool
	}{{"group-commit", events.MaxBatch, false}, {"txn-per-alloc", 1, false}, {"group-commit-reserved", events.MaxBatch, true}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			c := etcdtest.Start(b, etcdtest.WithFsync())
			admin := &allocator.Admin{Log: events.NewEtcdLog(c.Client(b), events.EtcdConfig{Prefix: "/coil/"}), Clock: events.SystemClock{}, Actor: "bench"}
			p := &events.PoolCreated{Name: "bench", BlockSizeBits: 8}
			sn, _ := allocator.ParseSubnet("10.0.0.0/8")
			p.Subnets = append(p.Subnets, sn)
			var opts []allocator.PoolOption
			if mode.reserved {
				rs := []events.AddrRange{{First: netip.MustParseAddr("10.0.0.10"), Last: netip.MustParseAddr("10.0.0.19")}}
				for blk := range 64 {
					a := netip.AddrFrom4([4]byte{10, 0, byte(blk), 100})
					rs = append(rs, events.AddrRange{First: a, Last: a})
				}
				opts = append(opts, allocator.SkipNetworkBroadcast(true), allocator.ReserveRanges(rs, "bench"))
			}
			if err := admin.CreatePool(ctx, p, opts...); err != nil {
				b.Fatal(err)
			}
			n, _, _ := etcdNode(b, ctx, c, "n1", mode.batch)
			var next atomic.Int64
			const workers = 64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if _, err := n.Allocate(ctx, allocator.Request{ContainerID: fmt.Sprintf("%064x", i), IfName: "eth0", Pool: "bench"}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "allocs/s")
		})
	}
}

// BenchmarkBlockAcquire3Nodes measures block acquisition latency with three nodes (each
// its own etcd client, fsync on) allocating from one pool of 32-address blocks as fast
// as they can, so they contend for the pool stream: the latency of the allocations that
// had to take a new block (the first address of each block) is reported.
func BenchmarkBlockAcquire3Nodes(b *testing.B) {
	b.Run("3-nodes", func(b *testing.B) { blockAcquire(b, 3) })
	// The baseline: one node alone, no contention.
	b.Run("1-node-baseline", func(b *testing.B) { blockAcquire(b, 1) })
}

func blockAcquire(b *testing.B, nodeCount int) {
	b.Helper()
	ctx := context.Background()
	c := etcdtest.Start(b, etcdtest.WithFsync())
	admin := &allocator.Admin{Log: events.NewEtcdLog(c.Client(b), events.EtcdConfig{Prefix: "/coil/"}), Clock: events.SystemClock{}, Actor: "bench"}
	p := &events.PoolCreated{Name: "blocks", BlockSizeBits: 5}
	sn, _ := allocator.ParseSubnet("10.0.0.0/8")
	p.Subnets = append(p.Subnets, sn)
	if err := admin.CreatePool(ctx, p); err != nil {
		b.Fatal(err)
	}
	var nodes []*allocator.Node
	for i := range nodeCount {
		n, _, _ := etcdNode(b, ctx, c, fmt.Sprint("n", i), 0)
		nodes = append(nodes, n)
	}
	var mu sync.Mutex
	var lat []time.Duration
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1)
				if k > int64(b.N) {
					return
				}
				t0 := time.Now()
				a, err := n.Allocate(ctx, allocator.Request{ContainerID: fmt.Sprintf("n%d-%d", i, k), IfName: "eth0", Pool: "blocks"})
				if err != nil {
					b.Error(err)
					return
				}
				d := time.Since(t0)
				if a.Addrs[0] == a.BlockPrefixes[0].Addr() { // this allocation took a new block
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(len(lat)), "blocks")
	}
}
