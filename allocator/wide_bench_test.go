package allocator_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/readside"
)

// benchNode starts a node allocator on an in-memory log (no etcd: what these benchmarks
// measure is the allocator's own work, not fsync).
func benchNode(b *testing.B, log *events.MemLog, name string) (*allocator.Node, func()) {
	b.Helper()
	key := "/coil/alive/" + name
	lease := leaseIDs.Add(1)
	log.SetLeaseKey(key, lease)
	n := allocator.NewNode(allocator.NodeConfig{Node: name, Log: log, Clock: events.SystemClock{}, AliveKey: key, Lease: lease})
	return n, allocatortest.Run(b, n)
}

// benchPool creates a pool in the pool-stream layout (coilctl's default); false when this
// build refuses it (a subnet of more than 2^24 blocks before 64-bit block indexes).
func benchPool(b *testing.B, log events.Log, name string, bits uint8, subnet string) bool {
	b.Helper()
	sn, err := allocator.ParseSubnet(subnet)
	if err != nil {
		b.Fatal(err)
	}
	admin := &allocator.Admin{Log: log, Clock: events.SystemClock{}, Actor: "bench"}
	err = admin.CreatePool(context.Background(), &events.PoolCreated{Name: name, BlockSizeBits: bits, Subnets: []events.Subnet{sn}}, allocator.LegacyLayout())
	return err == nil
}

// BenchmarkWidePool: IPv6 pools of the sizes people plan against the largest that worked
// before (/96 with blocks of 8 bits: 2^24 blocks) and a small one.
//
//   - create+first-add: a fresh in-memory log, pool create, node start, the first
//     allocation (which takes a block);
//   - replay-1000-blocks: readside.Replay of a log in which one node took 1000 blocks of
//     one address each (blocks of 0 bits);
//   - add-small-pool: allocations from 10.0.0.0/16 with blocks of 5 bits, one at a time
//     (the ADD hot path's allocator part on a small pool).
func BenchmarkWidePool(b *testing.B) {
	for _, tc := range []struct{ name, subnet string }{
		{"v6-112", "fd00:1::/112"}, {"v6-96", "fd00:1::/96"}, {"v6-64", "fd00:1::/64"}, {"v6-48", "fd00:1::/48"},
	} {
		b.Run("create+first-add/"+tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				log := events.NewMemLog()
				if !benchPool(b, log, "p", 8, tc.subnet) {
					b.Skipf("%s with blocks of 8 bits: refused by this build", tc.subnet)
				}
				n, stop := benchNode(b, log, "n1")
				if _, err := n.Allocate(context.Background(), allocator.Request{ContainerID: "c1", IfName: "eth0", Pool: "p"}); err != nil {
					b.Fatal(err)
				}
				stop()
			}
		})
	}
	for _, tc := range []struct{ name, subnet string }{
		{"v6-108", "fd00:1::/108"}, {"v6-104", "fd00:1::/104"}, {"v6-64", "fd00:1::/64"},
	} {
		b.Run("replay-1000-blocks/"+tc.name, func(b *testing.B) {
			log := events.NewMemLog()
			if !benchPool(b, log, "p", 0, tc.subnet) {
				b.Skipf("%s with blocks of 0 bits: refused by this build", tc.subnet)
			}
			n, stop := benchNode(b, log, "n1")
			for k := range 1000 {
				if _, err := n.Allocate(context.Background(), allocator.Request{ContainerID: fmt.Sprint("c", k), IfName: "eth0", Pool: "p"}); err != nil {
					b.Fatal(err)
				}
			}
			stop()
			ctx := context.Background()
			heads, rev, err := log.Streams(ctx, "", 0)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st, err := readside.Replay(ctx, log, readside.StreamsOf(heads, nil), rev, nil)
				if err != nil || len(st.Pools["p"].Owners) != 1000 {
					b.Fatalf("replay: %v", err)
				}
			}
		})
	}
	b.Run("add-small-pool", func(b *testing.B) {
		log := events.NewMemLog()
		benchPool(b, log, "p", 5, "10.0.0.0/16")
		n, stop := benchNode(b, log, "n1")
		defer stop()
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			id := fmt.Sprint("c", i)
			if _, err := n.Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: "p"}); err != nil {
				b.Fatal(err)
			}
			if _, err := n.Release(ctx, id, "eth0", "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
