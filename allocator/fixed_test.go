package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func claim(n *allocator.Node, id, pod, poolName string, fixed ...string) (*allocator.Assignment, error) {
	req := allocator.Request{ContainerID: id, IfName: "eth0", Pool: poolName, PodNamespace: "ns", PodName: pod}
	for _, f := range fixed {
		req.Fixed = append(req.Fixed, ip(f))
	}
	return n.Allocate(context.Background(), req)
}

// layouts runs f for both pool layouts (pool stream, block streams); the legacy one with
// the cluster at feature level 1, which claims need.
func layouts(t *testing.T, f func(t *testing.T, e *env)) {
	t.Helper()
	t.Run("legacy", func(t *testing.T) {
		e := newEnv(t)
		e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
		if err := e.admin.RequireLevel(context.Background(), events.Level1, "test"); err != nil {
			t.Fatal(err)
		}
		f(t, e)
	})
	t.Run("split", func(t *testing.T) { f(t, newEnv(t)) })
}

// replayAll folds the whole log and checks that no address is held twice across nodes
// and that every standing claim is held by its attachment.
func checkClaims(t *testing.T, e *env) *projection.State {
	t.Helper()
	checkInvariants(t, e.log, nil)
	st := replayAll(t, e.log)
	held := map[netip.Addr]string{}
	for name, nd := range st.Nodes {
		for a, k := range nd.Held {
			if other, dup := held[a]; dup {
				t.Fatalf("%s held by %s and by %s/%s on %s", a, other, k.ContainerID, k.IfName, name)
			}
			held[a] = k.ContainerID + " on " + name
		}
	}
	for pool, b := range st.Pools {
		for a, c := range b.Claims {
			if got, want := held[a], c.ContainerID+" on "+c.Node; got != want {
				t.Fatalf("pool %s: claim of %s by %s, held by %q", pool, a, want, got)
			}
		}
	}
	return st
}

// TestFixedAddressInAnotherNodesBlock: a node claims an address of a block another node
// owns; the claim is exported as a host route by the claimer; the owner, which has not
// seen the claim (no watch here), never hands that address out (its append conflicts on
// the pool stream, it catches up and skips it).
func TestFixedAddressInAnotherNodesBlock(t *testing.T) {
	layouts(t, func(t *testing.T, e *env) { //nolint:thelper // the subtest's body, not a helper
		e.pool("p", 4, "10.0.0.0/24") // 16 blocks of 16
		n1, n2 := e.node("n1", nil), e.node("n2", nil)
		first := alloc(t, n1, "c0", "p")
		block := first.BlockPrefixes[0]
		want := block.Addr().Next().Next().Next().Next().Next() // .5 of n1's block
		a, err := claim(n2, "db", "db-0", "p", want.String())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a.Addrs, []netip.Addr{want}) || !slices.Equal(a.BlockPrefixes, []netip.Prefix{netip.PrefixFrom(want, 32)}) {
			t.Fatalf("claim = %v, prefixes %v; want %s as a /32", a.Addrs, a.BlockPrefixes, want)
		}
		if got := n2.BlockPrefixes(); !slices.Contains(got, netip.PrefixFrom(want, 32)) {
			t.Fatalf("n2 exports %v, want %s/32 among them", got, want)
		}
		if got := n1.BlockPrefixes(); slices.Contains(got, netip.PrefixFrom(want, 32)) {
			t.Fatalf("n1 exports %v: the claim is n2's", got)
		}
		again, err := claim(n2, "db", "db-0", "p", want.String())
		if err != nil || again.Addrs[0] != want {
			t.Fatalf("repeated ADD: %v %v", again, err)
		}
		// n1 fills its block and more: never the claimed address.
		for i := range 20 {
			got := alloc(t, n1, fmt.Sprint("c", i+1), "p")
			if got.Addrs[0] == want {
				t.Fatalf("n1 handed out %s, claimed by n2", want)
			}
		}
		checkClaims(t, e)
		// The claim ends with the attachment's release; the host route goes.
		if _, err := n2.Release(context.Background(), "db", "eth0", "CNI DEL"); err != nil {
			t.Fatal(err)
		}
		if got := n2.BlockPrefixes(); slices.Contains(got, netip.PrefixFrom(want, 32)) {
			t.Fatalf("n2 still exports %s/32 after the release: %v", want, got)
		}
		st := checkClaims(t, e)
		if _, ok := st.Pools["p"].ClaimOf(want); ok {
			t.Fatal("claim stands after the release")
		}
	})
}

// TestFixedAddressRefusals: every refusal names what is wrong, and the holder.
func TestFixedAddressRefusals(t *testing.T) {
	layouts(t, func(t *testing.T, e *env) { //nolint:thelper // the subtest's body, not a helper
		e.pool("p", 4, "10.0.0.0/24")
		e.pool("q", 4, "10.5.0.0/24")
		e.pool("ds", 4, "10.6.0.0/24,fd00:6::/120")
		n1, n2, n3 := e.node("n1", nil), e.node("n2", nil), e.node("n3", nil)
		given := alloc(t, n1, "c0", "p") // pod ns/pod-c0
		if _, err := claim(n2, "db", "db-0", "p", "10.0.0.200"); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for _, r := range []allocator.ReserveRequest{
			{Pool: "p", Ranges: ranges(t, "10.0.0.100-10.0.0.110"), Reason: "VIPs"},
			{Pool: "ds", Ranges: ranges(t, "fd00:6::30")},
		} {
			if _, err := e.admin.Reserve(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.admin.SetNetworkBroadcast(ctx, "p", true); err != nil {
			t.Fatal(err)
		}
		// A claimed address is held: reserving it is refused, naming the claiming pod.
		if _, err := e.admin.Reserve(ctx, allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.200")}); !errors.Is(err, allocator.ErrAddressInUse) ||
			!strings.Contains(err.Error(), "db-0") {
			t.Errorf("reserving a claimed address: %v", err)
		}
		for _, c := range []struct {
			name, pod, pool string
			fixed           []string
			is              error
			want            []string
		}{
			{"claimed by another pod", "other", "p", []string{"10.0.0.200"}, allocator.ErrAddressHeld,
				[]string{"address 10.0.0.200 is held by pod ns/db-0 (container db, interface eth0) on node n2 since"}},
			{"same pod name, old one still there", "db-0", "p", []string{"10.0.0.200"}, allocator.ErrAddressHeld,
				[]string{"still held by pod ns/db-0", "an earlier pod of the same name ns/db-0", "try again"}},
			{"handed out by the block's owner", "x", "p", []string{given.Addrs[0].String()}, allocator.ErrAddressHeld,
				[]string{"address " + given.Addrs[0].String() + " is held by pod ns/pod-c0 (container c0, interface eth0) on node n1"}},
			{"in no pool", "x", "p", []string{"192.0.2.1"}, allocator.ErrAddressNotInPool,
				[]string{`address 192.0.2.1 is in no pool; this pod uses pool "p" (10.0.0.0/24)`}},
			{"in another pool", "x", "p", []string{"10.5.0.9"}, allocator.ErrAddressNotInPool,
				[]string{`address 10.5.0.9 is in pool "q", but this pod uses pool "p"`}},
			{"two of one family", "x", "p", []string{"10.0.0.9", "10.0.0.10"}, allocator.ErrInvalidFixed,
				[]string{"10.0.0.9 and 10.0.0.10 are both IPv4"}},
			{"families at different offsets", "x", "ds", []string{"10.6.0.9", "fd00:6::a"}, allocator.ErrInvalidFixed,
				[]string{"not at the same offset"}},
			{"a family the pool lacks", "x", "p", []string{"10.0.0.9", "fd00:6::9"}, allocator.ErrAddressNotInPool,
				[]string{"address fd00:6::9 is in pool \"ds\""}},
			{"unknown pool", "x", "nope", []string{"10.0.0.9"}, allocator.ErrPoolNotFound, []string{`pool "nope" does not exist`}},
			{"reserved", "x", "p", []string{"10.0.0.105"}, allocator.ErrAddressReserved,
				[]string{`address 10.0.0.105 is reserved in pool p (range 10.0.0.100-10.0.0.110, reason "VIPs", by`, "coilctl pool unreserve p 10.0.0.105"}},
			{"network address", "x", "p", []string{"10.0.0.0"}, allocator.ErrAddressReserved,
				[]string{"address 10.0.0.0 is a network or broadcast address, which pool p does not hand out"}},
			{"the other family's offset reserved", "x", "ds", []string{"10.6.0.48"}, allocator.ErrAddressReserved,
				[]string{"address fd00:6::30 is reserved in pool ds (range fd00:6::30, by"}},
		} {
			_, err := claim(n3, "c-"+strings.ReplaceAll(c.name, " ", "-"), c.pod, c.pool, c.fixed...)
			if !errors.Is(err, c.is) {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.is)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %q does not say %q", c.name, err, w)
				}
			}
		}
		// A disabled pool, or one whose node selector leaves the node out, hands out no
		// fixed address either.
		if _, err := e.admin.DisablePool(ctx, "q", "moving"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := n3.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := claim(n3, "c-disabled", "x", "q", "10.5.0.9"); !errors.Is(err, allocator.ErrPoolDisabled) {
			t.Errorf("claim in a disabled pool: %v", err)
		}
		if _, err := e.admin.EnablePool(ctx, "q"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.admin.SetNodeSelector(ctx, "q", "zone=a"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := n3.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := claim(n3, "c-unselected", "x", "q", "10.5.0.9"); !errors.Is(err, allocator.ErrNodeNotSelected) {
			t.Errorf("claim in a pool that does not select the node: %v", err)
		}
		// Nothing was written by the refusals: n3 holds nothing.
		if atts := n3.Attachments(); len(atts) != 0 {
			t.Fatalf("n3 holds %v after refusals", atts)
		}
		// Dual stack: one family asked for, the other follows at the same offset.
		a, err := claim(n3, "v6", "v6-0", "ds", "fd00:6::21")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a.Addrs, []netip.Addr{ip("10.6.0.33"), ip("fd00:6::21")}) {
			t.Fatalf("dual-stack claim = %v", a.Addrs)
		}
		checkClaims(t, e)
	})
}

// TestFixedAddressNeedsLevel1: on a cluster below feature level 1 a claim is refused
// (old coilds could not read AddressClaimed), naming the command that raises it.
func TestFixedAddressNeedsLevel1(t *testing.T) {
	e := newEnv(t)
	e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
	e.pool("p", 4, "10.0.0.0/24")
	n := e.node("n1", nil)
	_, err := claim(n, "c1", "db-0", "p", "10.0.0.7")
	if !errors.Is(err, allocator.ErrLevel) || !strings.Contains(err.Error(), "coilctl cluster version raise") {
		t.Fatalf("err = %v", err)
	}
}

// TestFixedAddressStatefulSet: the same pod name on another node gets the address once
// the old pod's DEL released it; a claim whose attachment was released by another path
// (an operator's `address release`, which writes the node stream only) is ended by the
// next claim in the same append.
func TestFixedAddressStatefulSet(t *testing.T) {
	layouts(t, func(t *testing.T, e *env) { //nolint:thelper // the subtest's body, not a helper
		e.pool("p", 4, "10.0.0.0/24")
		n1, n2, n3 := e.node("n1", nil), e.node("n2", nil), e.node("n3", nil)
		alloc(t, n1, "c0", "p")
		if _, err := claim(n2, "old", "web-0", "p", "10.0.0.3"); err != nil {
			t.Fatal(err)
		}
		if _, err := claim(n3, "new", "web-0", "p", "10.0.0.3"); !errors.Is(err, allocator.ErrAddressHeld) {
			t.Fatalf("while the old pod holds it: %v", err)
		}
		if _, err := n2.Release(context.Background(), "old", "eth0", "CNI DEL"); err != nil {
			t.Fatal(err)
		}
		a, err := claim(n3, "new", "web-0", "p", "10.0.0.3")
		if err != nil || a.Addrs[0] != ip("10.0.0.3") {
			t.Fatalf("after the old pod's DEL: %v %v", a, err)
		}
		// An operator releases it on n3 (coilctl address release): the claim ends too.
		if _, err = e.admin.ReleaseAddress(context.Background(), "n3", ip("10.0.0.3"), 0, "operator"); err != nil {
			t.Fatal(err)
		}
		if st := checkClaims(t, e); len(st.Pools["p"].Claims) != 0 {
			t.Fatalf("claims after the operator's release: %+v", st.Pools["p"].Claims)
		}
		a, err = claim(n2, "again", "web-0", "p", "10.0.0.3")
		if err != nil || a.Addrs[0] != ip("10.0.0.3") {
			t.Fatalf("after an operator's release: %v %v", a, err)
		}
		// A release that writes the node stream only (a reclaim, an older coilctl)
		// leaves the claim standing; the next claim ends it in its own append.
		ns := events.NodeStream("n2")
		head, _, err := e.log.Head(context.Background(), ns)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.log.Append(context.Background(), events.AppendRequest{Stream: ns, Expected: head, Events: []*events.Event{{
			Time: e.clock.Now(), Actor: "old-coilctl", Payload: &events.AddressReleased{ContainerID: "again", IfName: "eth0", Pool: "p", Block: a.Block, Addrs: a.Addrs, Reason: "old tool"},
		}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := claim(n3, "third", "web-0", "p", "10.0.0.3"); err != nil {
			t.Fatalf("after a node-stream-only release: %v", err)
		}
		st := checkClaims(t, e)
		c, ok := st.Pools["p"].ClaimOf(ip("10.0.0.3"))
		if !ok || c.Node != "n3" || c.ContainerID != "third" {
			t.Fatalf("claim = %+v %v", c, ok)
		}
		var ended *events.AddressClaimReleased
		if _, err := e.log.Read(context.Background(), events.PoolStream("p"), 1, 0, func(ev *events.Event) error {
			if p, ok := ev.Payload.(*events.AddressClaimReleased); ok {
				ended = p
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if ended == nil || ended.ContainerID != "again" || !strings.Contains(ended.Reason, "the attachment no longer holds it (node/n2 #") {
			t.Fatalf("last claim release: %+v", ended)
		}
	})
}

// TestFixedAddressInFreeBlock: an address of a block nobody owns is claimed and exported
// as a host route; the nodes that take blocks afterwards never hand it out, down to the
// last address of the pool.
func TestFixedAddressInFreeBlock(t *testing.T) {
	layouts(t, func(t *testing.T, e *env) { //nolint:thelper // the subtest's body, not a helper
		e.pool("s", 2, "10.1.0.0/28") // 4 blocks of 4
		n1, n2 := e.node("n1", nil), e.node("n2", nil)
		a, err := claim(n2, "fixed", "db-0", "s", "10.1.0.6")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(a.BlockPrefixes, []netip.Prefix{pfx("10.1.0.6/32")}) {
			t.Fatalf("prefixes %v", a.BlockPrefixes)
		}
		for i := range 15 {
			got, err := n1.Allocate(context.Background(), allocator.Request{ContainerID: fmt.Sprint("c", i), IfName: "eth0", Pool: "s"})
			if err != nil {
				t.Fatalf("allocation %d: %v", i, err)
			}
			if got.Addrs[0] == ip("10.1.0.6") {
				t.Fatal("n1 handed out the claimed address")
			}
		}
		if _, err := n1.Allocate(context.Background(), allocator.Request{ContainerID: "c16", IfName: "eth0", Pool: "s"}); !errors.Is(err, allocator.ErrExhausted) {
			t.Fatalf("16th allocation: %v", err)
		}
		checkClaims(t, e)
	})
}

// TestFixedAddressReclaim: reclaiming a dead node ends its claims too, so a StatefulSet
// pod rescheduled elsewhere gets its address at once, not at the next claim.
func TestFixedAddressReclaim(t *testing.T) {
	layouts(t, func(t *testing.T, e *env) { //nolint:thelper // the subtest's body, not a helper
		ctx := context.Background()
		e.pool("p", 4, "10.0.0.0/24")
		n1, n2, n3 := e.node("n1", nil), e.node("n2", nil), e.node("n3", nil)
		alloc(t, n1, "c0", "p")
		if _, err := claim(n2, "old", "web-0", "p", "10.0.0.3"); err != nil {
			t.Fatal(err)
		}
		e.log.DeleteKey("/coil/alive/n2")
		res, err := e.admin.Reclaim(ctx, "n2", "/coil/alive/n2", "node deleted")
		if err != nil || res.Released != 1 || res.ClaimsEnded != 1 {
			t.Fatalf("reclaim = %+v, %v", res, err)
		}
		if st := checkClaims(t, e); len(st.Pools["p"].Claims) != 0 {
			t.Fatalf("claims after the reclaim: %+v", st.Pools["p"].Claims)
		}
		if _, _, err = n3.Load(ctx); err != nil {
			t.Fatal(err)
		}
		a, err := claim(n3, "new", "web-0", "p", "10.0.0.3")
		if err != nil || a.Addrs[0] != ip("10.0.0.3") {
			t.Fatalf("claim after the reclaim: %v %v", a, err)
		}
		again, err := e.admin.Reclaim(ctx, "n2", "/coil/alive/n2", "again")
		if err != nil || again.ClaimsEnded != 0 || again.Released != 0 {
			t.Fatalf("second reclaim = %+v, %v", again, err)
		}
	})
}
