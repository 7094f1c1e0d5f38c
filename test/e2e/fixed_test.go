package e2e

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/demo"
)

// TestFixedAddressAcrossNodes (issue 14, item 3): a pod on node B asks for an address
// (CNI "ips" capability) in a block node A owns. B exports it as a /32 in its table 119,
// BIRD announces it, and the longer prefix wins over A's block route: a pod on node C
// and a pod on A itself (the block's owner) reach it through B. On DEL, B withdraws the
// /32 and the other nodes forget it; A's block route stays.
func TestFixedAddressAcrossNodes(t *testing.T) {
	c := startCluster(t, demo.Config{Nodes: 3}, 5)
	ctx := context.Background()
	if out, err := c.Coilctl(ctx, "cluster", "version", "raise"); err != nil {
		t.Fatalf("raise the cluster's feature level: %+v\n%s", err, out)
	}
	a, b, cn := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	onA := addPods(t, a, 1, "a")[0]
	onC := addPods(t, cn, 1, "c")[0]
	blockA := waitExported(t, a, 1)[0]
	waitExported(t, cn, 1)
	waitConverged(t, c)

	fixed := blockA.Addr()
	for range 7 {
		fixed = fixed.Next()
	}
	pod, err := b.AddPodWithIPs(ctx, "fixed", fixed.String())
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if pod.Addr != fixed {
		t.Fatalf("pod on %s got %s, want %s", b.Name, pod.Addr, fixed)
	}
	host := netip.PrefixFrom(fixed, 32)
	var got []netip.Prefix
	testutil.Eventually(t, 10*time.Second, func() bool {
		got = exported(t, b)
		return slices.Equal(got, []netip.Prefix{host})
	}, "%s exports only %s (exports %v)", b.Name, host, &got)
	if onA := exported(t, a); !slices.Equal(onA, []netip.Prefix{blockA}) {
		t.Fatalf("%s exports %v, want its block %s alone", a.Name, onA, blockA)
	}
	for _, n := range []*demo.Node{a, cn} {
		var rs []lab.Route
		testutil.Eventually(t, 20*time.Second, func() bool {
			rs = bgpRoutesTo(t, n, host)
			return len(rs) == 1 && rs[0].Gateway == b.FabricAddr
		}, "%s learns %s via %s (routes: %v)", n.Name, host, b.FabricAddr, &rs)
	}
	ping(t, onC, fixed)
	ping(t, onA, fixed)
	ping(t, pod, onC.Addr)

	if err := b.DelPod(ctx, "fixed"); err != nil {
		t.Fatalf("%+v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { got = exported(t, b); return len(got) == 0 },
		"%s withdraws %s (exports %v)", b.Name, host, &got)
	for _, n := range []*demo.Node{a, cn} {
		var rs []lab.Route
		testutil.Eventually(t, 20*time.Second, func() bool {
			rs = bgpRoutesTo(t, n, host)
			return len(rs) == 0
		}, "%s forgets %s (routes: %v)", n.Name, host, &rs)
	}
	waitConverged(t, c)
}

// bgpRoutesTo lists the BGP routes of n whose destination is dst.
func bgpRoutesTo(t *testing.T, n *demo.Node, dst netip.Prefix) []lab.Route {
	t.Helper()
	rs, err := n.BGPRoutes(context.Background())
	if err != nil {
		t.Fatalf("%+v", err)
	}
	var out []lab.Route
	for _, r := range rs {
		if r.Dst == dst {
			out = append(out, r)
		}
	}
	return out
}
