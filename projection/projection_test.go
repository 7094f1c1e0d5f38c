package projection_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// chain seals payloads into a stream the way a log would.
type chain struct {
	stream events.Stream
	head   events.Version
	n      int
}

func (c *chain) next(t *testing.T, p events.Payload) *events.Event {
	t.Helper()
	c.n++
	e := &events.Event{Time: t0.Add(time.Duration(c.n) * time.Second), Actor: "test", Payload: p}
	_, h, err := events.Seal(&events.AppendRequest{Stream: c.stream, Expected: c.head, Events: []*events.Event{e}})
	if err != nil {
		t.Fatal(err)
	}
	c.head = h
	return e
}

func mustApply(t *testing.T, apply func(*events.Event) error, e *events.Event) {
	t.Helper()
	if err := apply(e); err != nil {
		t.Fatalf("apply %s #%d: %v", e.Type(), e.Seq, err)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

func TestClusterFold(t *testing.T) {
	c := projection.NewCluster()
	ch := &chain{stream: events.ClusterStream}
	mustApply(t, c.Apply, ch.next(t, &events.PoolCreated{Name: "a", BlockSizeBits: 5, Subnets: []events.Subnet{{IPv4: pfx("10.0.0.0/24")}}}))
	mustApply(t, c.Apply, ch.next(t, &events.PoolSubnetAdded{Name: "a", Subnet: events.Subnet{IPv4: pfx("10.0.1.0/24")}}))
	if got := c.Pools["a"].NumBlocks(); got != 16 {
		t.Fatalf("blocks = %d, want 16", got)
	}
	dup := ch.next(t, &events.PoolCreated{Name: "a", BlockSizeBits: 5, Subnets: []events.Subnet{{IPv4: pfx("10.9.0.0/24")}}})
	before, _ := projection.StateHash(c)
	if err := c.Apply(dup); !errors.Is(err, projection.ErrInvalidEvent) {
		t.Fatalf("duplicate pool: err = %v", err)
	}
	after, _ := projection.StateHash(c)
	if before != after {
		t.Fatal("state changed on a failed apply")
	}
	ch = &chain{stream: events.ClusterStream, head: c.Head()}
	mustApply(t, c.Apply, ch.next(t, &events.PoolDeleted{Name: "a"}))
	if len(c.Pools) != 0 {
		t.Fatal("pool not deleted")
	}
	wrong := ch.next(t, &events.BlockAssigned{Index: 1, Node: "n"})
	if err := c.Apply(wrong); !errors.Is(err, projection.ErrWrongStream) {
		t.Fatalf("block event in cluster stream: err = %v", err)
	}
}

func TestSequenceAndSchema(t *testing.T) {
	b := projection.NewBlocks()
	ch := &chain{stream: events.PoolStream("p")}
	e1 := ch.next(t, &events.BlockAssigned{Index: 0, Node: "n1"})
	e2 := ch.next(t, &events.BlockAssigned{Index: 1, Node: "n1"})
	if err := b.Apply(e2); !errors.Is(err, projection.ErrSequence) {
		t.Fatalf("gap: err = %v", err)
	}
	mustApply(t, b.Apply, e1)
	if err := b.Apply(e1); !errors.Is(err, projection.ErrSequence) {
		t.Fatalf("applied twice: err = %v", err)
	}
	future := *e2
	future.Schema = events.SchemaVersion + 1
	if err := b.Apply(&future); !errors.Is(err, events.ErrFutureSchema) {
		t.Fatalf("future schema: err = %v", err)
	}
	unknown := *e2
	unknown.Payload = nil
	if err := b.Apply(&unknown); !errors.Is(err, events.ErrUnknownType) {
		t.Fatalf("unknown type: err = %v", err)
	}
	mustApply(t, b.Apply, e2)
	e3 := ch.next(t, &events.BlockAssigned{Index: 1, Node: "n2"})
	if err := b.Apply(e3); !errors.Is(err, projection.ErrInvalidEvent) {
		t.Fatalf("block owned twice: err = %v", err)
	}
	e3b := *e3
	e3b.Payload = &events.BlockReleased{Index: 1, Node: "n2"}
	if err := b.Apply(&e3b); !errors.Is(err, projection.ErrInvalidEvent) {
		t.Fatalf("release by non-owner: err = %v", err)
	}
	if got := b.OwnedBy("n1"); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("OwnedBy = %v", got)
	}
}

func TestNodeFold(t *testing.T) {
	n := projection.NewNode()
	ch := &chain{stream: events.NodeStream("n1")}
	mustApply(t, n.Apply, ch.next(t, &events.NodeRegistered{Node: "n1", Lease: 7}))
	mustApply(t, n.Apply, ch.next(t, &events.AddressAssigned{ContainerID: "c1", IfName: "eth0", Pool: "p", Block: 0, Addrs: []netip.Addr{addr("10.0.0.1")}}))
	dup := ch.next(t, &events.AddressAssigned{ContainerID: "c2", IfName: "eth0", Pool: "p", Block: 0, Addrs: []netip.Addr{addr("10.0.0.1")}})
	if err := n.Apply(dup); !errors.Is(err, projection.ErrInvalidEvent) {
		t.Fatalf("address held twice: err = %v", err)
	}
	ch = &chain{stream: ch.stream, head: n.Head()}
	retire := ch.next(t, &events.NodeRetired{Node: "n1"})
	if err := n.Apply(retire); !errors.Is(err, projection.ErrInvalidEvent) {
		t.Fatalf("retire with addresses: err = %v", err)
	}
	ch = &chain{stream: ch.stream, head: n.Head()}
	mustApply(t, n.Apply, ch.next(t, &events.AddressReleased{ContainerID: "c1", IfName: "eth0", Pool: "p", Block: 0, Addrs: []netip.Addr{addr("10.0.0.1")}}))
	if len(n.Held) != 0 || n.Use[projection.BlockRef{Pool: "p"}].InUse != 0 || n.Use[projection.BlockRef{Pool: "p"}].EmptySince.IsZero() {
		t.Fatalf("release not folded: %+v", n)
	}
	if n.Last["p"] != addr("10.0.0.1") {
		t.Fatalf("last = %v", n.Last["p"])
	}
	unknownRelease := ch.next(t, &events.AddressReleased{ContainerID: "zz", IfName: "eth0"})
	if err := n.Apply(unknownRelease); !errors.Is(err, projection.ErrInvalidEvent) {
		t.Fatalf("release of unheld: err = %v", err)
	}
}

func TestSnapshotPlusTailEqualsReplay(t *testing.T) {
	ch := &chain{stream: events.NodeStream("n1")}
	var log []*events.Event
	full := projection.NewNode()
	add := func(p events.Payload) {
		e := ch.next(t, p)
		mustApply(t, full.Apply, e)
		log = append(log, e)
	}
	add(&events.NodeRegistered{Node: "n1", Lease: 1})
	for i := range 10 {
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		add(&events.AddressAssigned{ContainerID: "c" + string(rune('a'+i)), IfName: "eth0", Pool: "p", Addrs: []netip.Addr{a}})
	}
	snap, err := projection.SnapshotOf(full)
	if err != nil {
		t.Fatal(err)
	}
	add(snap)
	snapAt := len(log) - 1
	add(&events.AddressReleased{ContainerID: "cc", IfName: "eth0", Pool: "p", Addrs: []netip.Addr{addr("10.0.0.2")}})
	add(&events.AddressAssigned{ContainerID: "zz", IfName: "eth0", Pool: "p", Addrs: []netip.Addr{addr("10.0.0.200")}})

	fromSnap := projection.NewNode()
	for _, e := range log[snapAt:] {
		mustApply(t, fromSnap.Apply, e)
	}
	h1, _ := projection.StateHash(full)
	h2, _ := projection.StateHash(fromSnap)
	if h1 != h2 {
		t.Fatalf("snapshot+tail %s != full replay %s", h2, h1)
	}

	// A snapshot that does not match the replayed state is detected.
	bad := *snap
	bad.StateHash[0] ^= 1
	ch2 := &chain{stream: events.NodeStream("n1")}
	n := projection.NewNode()
	for _, e := range log[:snapAt] {
		e2 := ch2.next(t, e.Payload)
		mustApply(t, n.Apply, e2)
	}
	if err := n.Apply(ch2.next(t, &bad)); !errors.Is(err, projection.ErrSnapshotMismatch) {
		t.Fatalf("bad snapshot: err = %v", err)
	}
}

func TestPoolGeometry(t *testing.T) {
	p := &projection.Pool{Name: "d", BlockSizeBits: 5, Subnets: []events.Subnet{
		{IPv4: pfx("10.0.0.0/26"), IPv6: pfx("fd00::/120")},
		{IPv4: pfx("10.1.0.0/27"), IPv6: pfx("fd01::/120")},
	}}
	if p.NumBlocks() != 3 {
		t.Fatalf("NumBlocks = %d", p.NumBlocks())
	}
	b, ok := p.Block(1)
	if !ok || b[0] != pfx("10.0.0.32/27") || b[1] != pfx("fd00::20/123") {
		t.Fatalf("Block(1) = %v", b)
	}
	b, ok = p.Block(2)
	if !ok || b[0] != pfx("10.1.0.0/27") || b[1] != pfx("fd01::/123") {
		t.Fatalf("Block(2) = %v", b)
	}
	if _, ok = p.Block(3); ok {
		t.Fatal("Block(3) exists")
	}
	as, ok := p.Addrs(1, 3)
	if !ok || as[0] != addr("10.0.0.35") || as[1] != addr("fd00::23") {
		t.Fatalf("Addrs(1,3) = %v", as)
	}
	for _, a := range []string{"10.0.0.35", "fd00::23"} {
		blk, off, ok := p.Locate(addr(a))
		if !ok || blk != 1 || off != 3 {
			t.Fatalf("Locate(%s) = %d %d %v", a, blk, off, ok)
		}
	}
	if blk, off, ok := p.Locate(addr("10.1.0.31")); !ok || blk != 2 || off != 31 {
		t.Fatalf("Locate = %d %d %v", blk, off, ok)
	}
	if _, _, ok := p.Locate(addr("10.2.0.1")); ok {
		t.Fatal("Locate outside pool")
	}
}

// The cluster's feature level only goes up, never beyond what this build reads, and
// shows in the state hash only once raised (states of older logs hash as before).
func TestClusterLevel(t *testing.T) {
	c := projection.NewCluster()
	ch := &chain{stream: events.ClusterStream}
	mustApply(t, c.Apply, ch.next(t, &events.PoolCreated{Name: "a", BlockSizeBits: 5, Subnets: []events.Subnet{{IPv4: pfx("10.0.0.0/24")}}}))
	base, _ := projection.StateHash(c)
	if js, _ := json.Marshal(c); strings.Contains(string(js), "level") {
		t.Fatalf("state at level 0 names a level: %s", js)
	}
	fork := *ch
	future := fork.next(t, &events.ClusterLevelRaised{Level: events.CurrentLevel + 1})
	if err := c.Apply(future); !errors.Is(err, events.ErrFutureLevel) {
		t.Fatalf("level beyond this build: %v", err)
	}
	mustApply(t, c.Apply, ch.next(t, &events.ClusterLevelRaised{Level: 1}))
	if c.Level != 1 {
		t.Fatalf("level = %d", c.Level)
	}
	if h, _ := projection.StateHash(c); h == base {
		t.Fatal("the raise does not change the state hash")
	}
	again := ch.next(t, &events.ClusterLevelRaised{Level: 1})
	before, _ := projection.StateHash(c)
	if err := c.Apply(again); !errors.Is(err, projection.ErrInvalidEvent) {
		t.Fatalf("raise to the same level: %v", err)
	}
	if after, _ := projection.StateHash(c); after != before || c.Level != 1 {
		t.Fatal("a refused raise changed the state")
	}
	if err := projection.NewBlocks().Apply(again); err == nil {
		t.Fatal("a pool stream took ClusterLevelRaised")
	}
}
