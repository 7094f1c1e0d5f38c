package projection_test

import (
	"net/netip"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

func TestPoolSplitFold(t *testing.T) {
	c := projection.NewCluster()
	ch := &chain{stream: events.ClusterStream}
	mustApply(t, c.Apply, ch.next(t, &events.PoolCreated{Name: "a", BlockSizeBits: 5, Subnets: []events.Subnet{{IPv4: pfx("10.0.0.0/24")}}}))
	before, _ := projection.StateHash(c)
	mustApply(t, c.Apply, ch.next(t, &events.PoolSplit{Name: "a"}))
	if !c.Pools["a"].Split {
		t.Fatal("pool not split")
	}
	for _, p := range []events.Payload{&events.PoolSplit{Name: "a"}, &events.PoolSplit{Name: "nope"}} {
		e := ch.next(t, p)
		if err := c.Apply(e); !errors.Is(err, projection.ErrInvalidEvent) {
			t.Fatalf("PoolSplit %+v: err = %v", p, err)
		}
		ch.head = c.Head()
	}
	// A pool that was never split hashes as before the field existed (old snapshots still verify).
	c2 := projection.NewCluster()
	ch2 := &chain{stream: events.ClusterStream}
	mustApply(t, c2.Apply, ch2.next(t, &events.PoolCreated{Name: "a", BlockSizeBits: 5, Subnets: []events.Subnet{{IPv4: pfx("10.0.0.0/24")}}}))
	if h, _ := projection.StateHash(c2); h != before {
		t.Fatal("state hash of an unsplit pool changed")
	}
	snap, err := projection.SnapshotOf(c2)
	if err != nil {
		t.Fatal(err)
	}
	if string(snap.State) != `{"head":{"seq":1,"hash":"`+c2.Head().Hash.String()+`"},"pools":{"a":{"name":"a","blockSizeBits":5,"subnets":[{"ipv4":"10.0.0.0/24"}],"created":"2026-11-01T12:00:01Z"}}}` {
		t.Fatalf("unsplit pool state: %s", snap.State)
	}
}

func TestBlockStreamFold(t *testing.T) {
	st := projection.NewState()
	s7 := &chain{stream: events.BlockStream("p", 7)}
	mustApply(t, st.Apply, s7.next(t, &events.BlockAssigned{Index: 7, Node: "n1"}))
	if o, ok := st.Owner("p", 7); !ok || o.Node != "n1" {
		t.Fatalf("owner of block 7: %+v %v", o, ok)
	}
	// Another node cannot take it, nor release it; an event naming another block is refused.
	for _, p := range []events.Payload{
		&events.BlockAssigned{Index: 7, Node: "n2"},
		&events.BlockReleased{Index: 7, Node: "n2"},
		&events.BlockReleased{Index: 8, Node: "n1"},
		&events.NodeBlockAdded{Pool: "p", Index: 7},
	} {
		e := s7.next(t, p)
		err := st.Apply(e)
		if !errors.Is(err, projection.ErrInvalidEvent) && !errors.Is(err, projection.ErrWrongStream) {
			t.Fatalf("%T %+v in block/p/7: err = %v", p, p, err)
		}
		s7.head = st.Head(s7.stream)
	}
	mustApply(t, st.Apply, s7.next(t, &events.BlockReleased{Index: 7, Node: "n1", Reason: "empty"}))
	if _, ok := st.Owner("p", 7); ok {
		t.Fatal("block 7 still owned after its release")
	}
	mustApply(t, st.Apply, s7.next(t, &events.BlockAssigned{Index: 7, Node: "n2"}))
	// Legacy owners and block streams together.
	pool := &chain{stream: events.PoolStream("p")}
	mustApply(t, st.Apply, pool.next(t, &events.BlockAssigned{Index: 1, Node: "old"}))
	got := st.PoolOwners("p")
	if len(got) != 2 || got[1].Node != "old" || got[7].Node != "n2" {
		t.Fatalf("pool owners: %+v", got)
	}
	if h := st.Head(events.BlockStream("p", 7)); h.Seq != 3 {
		t.Fatalf("block stream head %d, want 3", h.Seq)
	}
	if _, err := st.Hash(); err != nil {
		t.Fatal(err)
	}
}

func TestNodeBlocksFold(t *testing.T) {
	n := projection.NewNode()
	ch := &chain{stream: events.NodeStream("n1")}
	mustApply(t, n.Apply, ch.next(t, &events.NodeRegistered{Node: "n1", Lease: 1}))
	before, _ := projection.StateHash(n)
	mustApply(t, n.Apply, ch.next(t, &events.NodeBlockAdded{Pool: "p", Index: 3}))
	ref := projection.BlockRef{Pool: "p", Index: 3}
	if _, ok := n.Blocks[ref]; !ok {
		t.Fatal("block not recorded")
	}
	bad := func(p events.Payload) {
		t.Helper()
		e := ch.next(t, p)
		err := n.Apply(e)
		if !errors.Is(err, projection.ErrInvalidEvent) && !errors.Is(err, projection.ErrWrongStream) {
			t.Fatalf("%T %+v: err = %v", p, p, err)
		}
		ch.head = n.Head()
	}
	bad(&events.NodeBlockAdded{Pool: "p", Index: 3})
	bad(&events.NodeBlockRemoved{Pool: "p", Index: 4})
	bad(&events.PoolSplit{Name: "p"})
	mustApply(t, n.Apply, ch.next(t, &events.AddressAssigned{ContainerID: "c1", IfName: "eth0", Pool: "p", Block: 3, Addrs: []netip.Addr{addr("10.0.0.96")}}))
	bad(&events.NodeBlockRemoved{Pool: "p", Index: 3}) // an address is still in it
	mustApply(t, n.Apply, ch.next(t, &events.AddressReleased{ContainerID: "c1", IfName: "eth0", Pool: "p", Block: 3, Addrs: []netip.Addr{addr("10.0.0.96")}}))
	mustApply(t, n.Apply, ch.next(t, &events.NodeBlockRemoved{Pool: "p", Index: 3, Reason: "empty"}))
	if len(n.Blocks) != 0 {
		t.Fatal("block still recorded")
	}
	// A node that never had a block hashes as before the field existed.
	if h, _ := projection.StateHash(n); h == before {
		t.Fatal("state did not change") // Use and Last changed; the Blocks field is empty again
	}
	n2 := projection.NewNode()
	ch2 := &chain{stream: events.NodeStream("n1")}
	mustApply(t, n2.Apply, ch2.next(t, &events.NodeRegistered{Node: "n1", Lease: 1}))
	if h, _ := projection.StateHash(n2); h != before {
		t.Fatal("state hash of a node without blocks is not stable")
	}
	snap, _ := projection.SnapshotOf(n2)
	if want := `"use":{},"last":{}}`; string(snap.State[len(snap.State)-len(want):]) != want {
		t.Fatalf("node state without blocks: %s", snap.State)
	}
}
