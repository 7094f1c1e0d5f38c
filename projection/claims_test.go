package projection_test

import (
	"net/netip"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// TestClaimFold: a claim stands until its own attachment releases it; a second claim of
// an address (either family), a release by another attachment or of an unclaimed
// address, and claims in a block stream or node stream are refused; a pool stream
// without claims hashes as before claims existed; a snapshot with claims reloads.
func TestClaimFold(t *testing.T) {
	b := projection.NewBlocks()
	ch := &chain{stream: events.PoolStream("p")}
	mustApply(t, b.Apply, ch.next(t, &events.BlockAssigned{Index: 0, Node: "n1"}))
	before, _ := projection.StateHash(b)
	snap0, _ := projection.SnapshotOf(b)
	if string(snap0.State) != `{"head":{"seq":1,"hash":"`+b.Head().Hash.String()+`"},"owners":{"0":{"node":"n1","since":"2026-11-01T12:00:01Z"}}}` {
		t.Fatalf("pool state without claims: %s", snap0.State)
	}
	v4, v6 := addr("10.0.0.7"), addr("fd00::7")
	mustApply(t, b.Apply, ch.next(t, &events.AddressClaimed{Addrs: []netip.Addr{v4, v6}, Block: 0, Node: "n2", ContainerID: "c1", IfName: "eth0",
		PodNamespace: "ns", PodName: "db-0"}))
	c, ok := b.ClaimOf(v6)
	if !ok || c.Node != "n2" || c.Pod() != "ns/db-0" || c.Since.IsZero() {
		t.Fatalf("claim of %s: %+v %v", v6, c, ok)
	}
	bad := func(p events.Payload) {
		t.Helper()
		e := ch.next(t, p)
		h, _ := projection.StateHash(b)
		if err := b.Apply(e); !errors.Is(err, projection.ErrInvalidEvent) {
			t.Fatalf("%T %+v: err = %v", p, p, err)
		}
		if h2, _ := projection.StateHash(b); h2 != h {
			t.Fatal("state changed on a refused event")
		}
		ch.head = b.Head()
	}
	bad(&events.AddressClaimed{Addrs: []netip.Addr{v4}, Node: "n3", ContainerID: "c2", IfName: "eth0"})
	bad(&events.AddressClaimed{Addrs: []netip.Addr{addr("10.0.0.8"), v6}, Node: "n3", ContainerID: "c2", IfName: "eth0"})
	bad(&events.AddressClaimed{Addrs: nil, Node: "n3", ContainerID: "c2", IfName: "eth0"})
	bad(&events.AddressClaimed{Addrs: []netip.Addr{addr("10.0.0.9")}, ContainerID: "c2", IfName: "eth0"})
	bad(&events.AddressClaimReleased{Addrs: []netip.Addr{v4, v6}, Node: "n3", ContainerID: "c1", IfName: "eth0"})
	bad(&events.AddressClaimReleased{Addrs: []netip.Addr{v4, v6}, Node: "n2", ContainerID: "c9", IfName: "eth0"})
	bad(&events.AddressClaimReleased{Addrs: []netip.Addr{addr("10.0.0.9")}, Node: "n2", ContainerID: "c1", IfName: "eth0"})

	// A snapshot with a claim reloads to the same state.
	snap, err := projection.SnapshotOf(b)
	if err != nil {
		t.Fatal(err)
	}
	ch2 := &chain{stream: ch.stream, head: b.Head()}
	b2 := projection.NewBlocks()
	mustApply(t, b2.Apply, ch2.next(t, snap))
	if c2, ok := b2.ClaimOf(v4); !ok || c2.ContainerID != "c1" {
		t.Fatalf("claim after snapshot: %+v %v", c2, ok)
	}

	mustApply(t, b.Apply, ch.next(t, &events.AddressClaimReleased{Addrs: []netip.Addr{v4, v6}, Node: "n2", ContainerID: "c1", IfName: "eth0", Reason: "CNI DEL"}))
	if _, ok := b.ClaimOf(v4); ok {
		t.Fatal("claim stands after its release")
	}
	// Claims belong in pool streams only.
	st := projection.NewState()
	bs := &chain{stream: events.BlockStream("p", 3)}
	if err := st.Apply(bs.next(t, &events.AddressClaimed{Addrs: []netip.Addr{v4}, Block: 3, Node: "n2", ContainerID: "c1", IfName: "eth0"})); !errors.Is(err, projection.ErrWrongStream) {
		t.Fatalf("claim in a block stream: err = %v", err)
	}
	ns := &chain{stream: events.NodeStream("n2")}
	if err := st.Apply(ns.next(t, &events.AddressClaimed{Addrs: []netip.Addr{v4}, Node: "n2", ContainerID: "c1", IfName: "eth0"})); !errors.Is(err, projection.ErrWrongStream) {
		t.Fatalf("claim in a node stream: err = %v", err)
	}
	cs := &chain{stream: events.ClusterStream}
	if err := st.Apply(cs.next(t, &events.AddressClaimReleased{Addrs: []netip.Addr{v4}, Node: "n2", ContainerID: "c1", IfName: "eth0"})); !errors.Is(err, projection.ErrWrongStream) {
		t.Fatalf("claim release in the cluster stream: err = %v", err)
	}
	// The hash covers claims, and a pool whose claims are all gone hashes as one that never had any.
	b3 := projection.NewBlocks()
	ch3 := &chain{stream: events.PoolStream("p")}
	mustApply(t, b3.Apply, ch3.next(t, &events.BlockAssigned{Index: 0, Node: "n1"}))
	if h, _ := projection.StateHash(b3); h != before {
		t.Fatal("state hash of a pool without claims is not stable")
	}
	withClaim := projection.NewBlocks()
	ch4 := &chain{stream: events.PoolStream("p")}
	mustApply(t, withClaim.Apply, ch4.next(t, &events.BlockAssigned{Index: 0, Node: "n1"}))
	h1, _ := projection.StateHash(withClaim)
	mustApply(t, withClaim.Apply, ch4.next(t, &events.AddressClaimed{Addrs: []netip.Addr{v4}, Node: "n2", ContainerID: "c1", IfName: "eth0"}))
	mustApply(t, withClaim.Apply, ch4.next(t, &events.AddressClaimReleased{Addrs: []netip.Addr{v4}, Node: "n2", ContainerID: "c1", IfName: "eth0"}))
	snapEnd, _ := projection.SnapshotOf(withClaim)
	if h2, _ := projection.StateHash(withClaim); h2 == h1 || len(snapEnd.State) == 0 || string(snapEnd.State[len(snapEnd.State)-2:]) != "}}" {
		t.Fatalf("state after claim and release: %s", snapEnd.State)
	}
}
