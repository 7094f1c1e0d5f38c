package allocator_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/coil-net/coil/allocator"
)

// BenchmarkAllocateDecision measures one ADD's allocation through the committer with
// an in-memory log (no etcd: the decision, the batch and the fold dominate), one request
// at a time, releasing as it goes so the pool never fills. "plain": a pool without node
// selector (what every ADD paid before node selectors, and the check it pays now: one
// comparison); "selector": a pool whose node selector matches the node's labels (a
// cached, parsed selector matched against the labels per ADD).
func BenchmarkAllocateDecision(b *testing.B) {
	for _, mode := range []string{"plain", "selector"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			e := newEnv(&testing.T{})
			defer e.close()
			var opts []allocator.PoolOption
			if mode == "selector" {
				opts = append(opts, allocator.WithNodeSelector("topology.kubernetes.io/zone=a,rack in (r1,r2)"))
			}
			if err := e.admin.CreatePool(ctx, pool(e.t, "bench", 8, "10.0.0.0/16"), append(e.poolOpts, opts...)...); err != nil {
				b.Fatal(err)
			}
			n := e.node("n1", nil)
			if mode == "selector" {
				if _, err := n.SetLabels(ctx, map[string]string{"topology.kubernetes.io/zone": "a", "rack": "r1", "kubernetes.io/hostname": "n1"}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				id := fmt.Sprintf("%064x", i)
				if _, err := n.Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: "bench"}); err != nil {
					b.Fatal(err)
				}
				if _, err := n.Release(ctx, id, "eth0", "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPoolCheck is the check an ADD makes on its pool, alone (under the node's
// lock, as in the committer): "plain" (no selector: a bool and a string compared),
// "selector" (a cached, parsed selector matched against the node's labels), and
// "parse-each-time" (what parsing the selector on every ADD would cost instead).
func BenchmarkPoolCheck(b *testing.B) {
	ctx := context.Background()
	e := newEnv(&testing.T{})
	defer e.close()
	const sel = "topology.kubernetes.io/zone=a,rack in (r1,r2)"
	if err := e.admin.CreatePool(ctx, pool(e.t, "plain", 8, "10.0.0.0/16"), e.poolOpts...); err != nil {
		b.Fatal(err)
	}
	if err := e.admin.CreatePool(ctx, pool(e.t, "sel", 8, "10.1.0.0/16"), append(e.poolOpts, allocator.WithNodeSelector(sel))...); err != nil {
		b.Fatal(err)
	}
	n := e.node("n1", nil)
	lbls := map[string]string{"topology.kubernetes.io/zone": "a", "rack": "r1", "kubernetes.io/hostname": "n1"}
	if _, err := n.SetLabels(ctx, lbls); err != nil {
		b.Fatal(err)
	}
	b.Run("plain", func(b *testing.B) {
		for range b.N {
			if err := n.Usable("plain"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("selector", func(b *testing.B) {
		for range b.N {
			if err := n.Usable("sel"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse-each-time", func(b *testing.B) {
		for range b.N {
			if ok, err := allocator.Selects(sel, lbls); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
}
