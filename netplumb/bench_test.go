package netplumb_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/netplumb"
)

// BenchmarkSetupTeardown measures one dual-stack pod: Setup (veth with the peer born in
// the pod namespace, addresses, routes on both sides) and Teardown (veth deletion).
// Reported: medians in ms.
func BenchmarkSetupTeardown(b *testing.B) {
	for _, c := range []struct {
		name  string
		addrs []string
	}{{"dual-stack", []string{"10.1.3.1", "fd00::3:1"}}, {"ipv4", []string{"10.1.3.1"}}} {
		b.Run(c.name, func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			pod := mustPod("bench", "eth0", e.podPath, c.addrs...)
			var setups, teardowns []time.Duration
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				if _, err := e.p.Setup(ctx, pod); err != nil {
					b.Fatalf("Setup: %v", err)
				}
				t1 := time.Now()
				if err := e.p.Teardown(ctx, pod.ContainerID, pod.IfName); err != nil {
					b.Fatalf("Teardown: %v", err)
				}
				t2 := time.Now()
				setups = append(setups, t1.Sub(t0))
				teardowns = append(teardowns, t2.Sub(t1))
			}
			b.ReportMetric(testutil.MedianMs(setups), "setup-ms-p50")
			b.ReportMetric(testutil.MedianMs(teardowns), "teardown-ms-p50")
		})
	}
}

// BenchmarkPrepareFinish splits an IPv4 pod's plumbing as coild's ADD does it: Prepare
// (the veth pair, made while the address commits; on the ADD's critical path once the
// commit is faster) and Finish (address, routes). Reported: medians in ms.
func BenchmarkPrepareFinish(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	pod := mustPod("bench", "eth0", e.podPath, "10.1.3.1")
	var preps, finishes []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		pd, err := e.p.Prepare(ctx, netplumb.Pod{ContainerID: pod.ContainerID, IfName: pod.IfName, NetNS: pod.NetNS})
		if err != nil {
			b.Fatalf("Prepare: %v", err)
		}
		t1 := time.Now()
		if _, err := pd.Finish(ctx, pod.Addrs); err != nil {
			b.Fatalf("Finish: %v", err)
		}
		t2 := time.Now()
		b.StopTimer()
		if err := e.p.Teardown(ctx, pod.ContainerID, pod.IfName); err != nil {
			b.Fatalf("Teardown: %v", err)
		}
		b.StartTimer()
		preps = append(preps, t1.Sub(t0))
		finishes = append(finishes, t2.Sub(t1))
	}
	b.ReportMetric(testutil.MedianMs(preps), "prepare-ms-p50")
	b.ReportMetric(testutil.MedianMs(finishes), "finish-ms-p50")
}

// BenchmarkTeardown20 compares deleting 20 host veths one by one (Teardown) with one
// TeardownMany. Reported: median ms for the 20 links.
func BenchmarkTeardown20(b *testing.B) {
	const n = 20
	for _, mode := range []string{"one-by-one", "many"} {
		b.Run(mode, func(b *testing.B) {
			e := newEnv(b)
			ctx := context.Background()
			var took []time.Duration
			for range b.N {
				b.StopTimer()
				var names []string
				for i := range n {
					pod := netplumb.Pod{
						ContainerID: fmt.Sprintf("bench-%d", i),
						IfName:      fmt.Sprintf("eth%d", i),
						NetNS:       e.podPath,
						Addrs:       []netip.Addr{netip.AddrFrom4([4]byte{10, 1, 4, byte(i + 1)})},
					}
					att, err := e.p.Setup(ctx, pod)
					if err != nil {
						b.Fatalf("Setup: %v", err)
					}
					names = append(names, att.HostVeth)
				}
				b.StartTimer()
				t0 := time.Now()
				if mode == "many" {
					if err := e.p.TeardownMany(ctx, names); err != nil {
						b.Fatalf("TeardownMany: %v", err)
					}
				} else {
					for i := range n {
						if err := e.p.Teardown(ctx, fmt.Sprintf("bench-%d", i), fmt.Sprintf("eth%d", i)); err != nil {
							b.Fatalf("Teardown: %v", err)
						}
					}
				}
				took = append(took, time.Since(t0))
			}
			b.ReportMetric(testutil.MedianMs(took), "ms-per-20-p50")
			b.ReportMetric(testutil.MedianMs(took)/n, "ms-per-link-p50")
		})
	}
}
