package projection_test

import (
	"encoding/json"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// folder is a stream state under test: one of *Cluster, *Blocks, *Node.
type folder interface {
	Apply(*events.Event) error
	Head() events.Version
}

// seal makes e the next event after head in stream s.
func seal(t *testing.T, s events.Stream, head events.Version, p events.Payload) *events.Event {
	t.Helper()
	e := &events.Event{Time: t0, Actor: "fuzz", Payload: p}
	if _, _, err := events.Seal(&events.AppendRequest{Stream: s, Expected: head, Events: []*events.Event{e}}); err != nil {
		t.Fatal(err)
	}
	return e
}

// followUp derives a plausible event for a stream of kind k from one byte.
func followUp(k uint8, b byte) events.Payload {
	name := "p" + strconv.Itoa(int(b%3))
	id := "c" + strconv.Itoa(int(b%4))
	a := netip.AddrFrom4([4]byte{10, 0, 0, b % 8})
	switch k {
	case 0:
		switch b % 3 {
		case 0:
			return &events.PoolCreated{Name: name, BlockSizeBits: 5, Subnets: []events.Subnet{{IPv4: netip.MustParsePrefix("10.0.0.0/24")}}}
		case 1:
			return &events.PoolSubnetAdded{Name: name, Subnet: events.Subnet{IPv4: netip.MustParsePrefix("10.1.0.0/24")}}
		}
		return &events.PoolDeleted{Name: name}
	case 1:
		switch b % 3 {
		case 0:
			return &events.BlockAssigned{Index: uint64(b % 5), Node: "n1"}
		case 1:
			return &events.BlockReleased{Index: uint64(b % 5), Node: "n1"}
		}
		return &events.BlockReclaimed{Index: uint64(b % 5), Node: "n2"}
	}
	switch b % 4 {
	case 0:
		return &events.NodeRegistered{Node: "n1", Lease: 7}
	case 1:
		return &events.NodeRetired{Node: "n1"}
	case 2:
		return &events.AddressAssigned{ContainerID: id, IfName: "eth0", Pool: name, Block: uint64(b % 2), Addrs: []netip.Addr{a}}
	}
	return &events.AddressReleased{ContainerID: id, IfName: "eth0", Pool: name, Block: uint64(b % 2), Addrs: []netip.Addr{a}}
}

func newFolder(k uint8) (folder, events.Stream) {
	switch k {
	case 0:
		return projection.NewCluster(), events.ClusterStream
	case 1:
		return projection.NewBlocks(), events.PoolStream("p0")
	}
	return projection.NewNode(), events.NodeStream("n1")
}

// FuzzSnapshot: a Snapshot event's state comes from etcd or an import file, so anyone who
// can write there chooses it. Loading one never panics, a loaded state hashes as the
// snapshot says, and folding events after it never panics either.
func FuzzSnapshot(f *testing.F) {
	for k := range uint8(3) {
		st, s := newFolder(k)
		head := events.Version{}
		for i := range byte(12) {
			e := seal(&testing.T{}, s, head, followUp(k, i*7))
			if st.Apply(e) == nil {
				head = st.Head()
			}
		}
		snap, err := projection.SnapshotOf(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(k, snap.State, []byte{0, 1, 2, 3, 4, 5, 6, 7})
	}
	f.Fuzz(func(t *testing.T, kind uint8, state []byte, ops []byte) {
		k := kind % 3
		if len(ops) > 64 {
			ops = ops[:64]
		}
		// The snapshot's hash is its state's own, so the fuzzer reaches the load.
		probe, s := newFolder(k)
		if json.Unmarshal(state, probe) != nil {
			return
		}
		h, err := projection.StateHash(probe)
		if err != nil {
			return
		}
		at := probe.Head()
		if at.Seq >= events.MaxSeq-uint64(len(ops))-1 {
			return
		}
		st, _ := newFolder(k)
		e := seal(t, s, at, &events.Snapshot{StateHash: h, State: state})
		if err := st.Apply(e); err != nil {
			return
		}
		// Loaded: the snapshot's state with its head moved to the snapshot event.
		switch p := probe.(type) {
		case *projection.Cluster:
			p.At.Seq, p.At.Hash = e.Seq, e.Hash
		case *projection.Blocks:
			p.At.Seq, p.At.Hash = e.Seq, e.Hash
		case *projection.Node:
			p.At.Seq, p.At.Hash = e.Seq, e.Hash
		}
		want, _ := projection.StateHash(probe)
		if got, err := projection.StateHash(st); err != nil || got != want {
			t.Fatalf("loaded state hashes to %s (%v), want %s", got, err, want)
		}
		head := st.Head()
		for _, b := range ops {
			e := seal(t, s, head, followUp(k, b))
			e.Time = t0.Add(time.Duration(b) * time.Second)
			if st.Apply(e) == nil {
				head = st.Head()
			}
		}
	})
}
