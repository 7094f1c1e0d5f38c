package daemon_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
)

// TestCNIWidePools: the sizes people plan (issue 14, item 8) through the CNI ADD path, in
// real namespaces: a dual-stack pool pairing an IPv4 /16 with an IPv6 /64 (blocks of 8
// bits: block i is a /24 and a /120 at the same offset) and an IPv6 /48 pool with blocks
// of 6 bits (2^58 blocks numbered). The pod gets its addresses, the node the blocks in
// table 119, and DEL gives them back.
func TestCNIWidePools(t *testing.T) {
	const (
		v4 = "10.101.0.0/16"
		v6 = "fd00:c011:0:1::/64"
		wd = "fd00:c012::/48"
	)
	e := newEnv(t)
	e.createPool("default", 8, v4+","+v6)
	e.createPool("wide", 6, wd)
	e.startDaemon(e.config())
	ctx := context.Background()
	c := e.cni()

	_, podPath := e.pod("dual")
	rt := podRT("wide0001", podPath)
	res, err := c.AddNetworkList(ctx, e.netList(), rt)
	if err != nil {
		t.Fatalf("ADD (dual-stack /16 + /64): %v", err)
	}
	addrs := addrsOf(t, res)
	if len(addrs) != 2 || !netip.MustParsePrefix(v4).Contains(addrs[0]) || !netip.MustParsePrefix(v6).Contains(addrs[1]) {
		t.Fatalf("ADD gave %v, want one address of %s and one of %s", addrs, v4, v6)
	}
	blocks := e.nodeBlocks("default")
	if len(blocks) != 1 {
		t.Fatalf("node owns blocks %v of the dual-stack pool, want one", blocks)
	}
	want := blockRoutes(v4, v6, 8, blocks)
	if got := table(t, e.nodeNS, 119); strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Errorf("table 119 %q, want %q", got, want)
	}
	if perr := ping(t, e.nodeNS, addrs[0]); perr != nil {
		t.Errorf("node -> pod: %v", perr)
	}

	_, widePath := e.pod("wide")
	wrt := podRT("wide0002", widePath)
	list := e.netListWith(`,"pool":"wide"`)
	res, err = c.AddNetworkList(ctx, list, wrt)
	if err != nil {
		t.Fatalf("ADD (IPv6 /48, blocks of 6 bits): %v", err)
	}
	waddrs := addrsOf(t, res)
	if len(waddrs) != 1 || !netip.MustParsePrefix(wd).Contains(waddrs[0]) {
		t.Fatalf("ADD gave %v, want one address of %s", waddrs, wd)
	}
	wblock := netip.PrefixFrom(waddrs[0], 122).Masked()
	testutil.Eventually(t, 20*time.Second, func() bool {
		for _, r := range table(t, e.nodeNS, 119) {
			if r == "blackhole "+wblock.String() {
				return true
			}
		}
		return false
	}, "table 119 holds the /122 block %s", wblock)
	if perr := ping(t, e.nodeNS, waddrs[0]); perr != nil {
		t.Errorf("node -> pod (IPv6 /48 pool): %v", perr)
	}

	if err := c.DelNetworkList(ctx, e.netList(), rt); err != nil {
		t.Fatalf("DEL dual: %v", err)
	}
	if err := c.DelNetworkList(ctx, list, wrt); err != nil {
		t.Fatalf("DEL wide: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return len(e.held()) == 0 }, "addresses released after DEL")
}
