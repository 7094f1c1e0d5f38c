package projection_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

func rng(first, last string) events.AddrRange {
	return events.AddrRange{First: addr(first), Last: addr(last)}
}

// reserveFold folds payloads into a cluster with pool "p" (10.0.0.0/24 and
// 10.0.1.0/24,fd00::/120-style dual stack is tested separately); a refused event leaves
// the chain where it was.
type reserveFold struct {
	t  *testing.T
	c  *projection.Cluster
	ch *chain
}

func newReserveFold(t *testing.T, subnets ...events.Subnet) *reserveFold {
	t.Helper()
	f := &reserveFold{t: t, c: projection.NewCluster(), ch: &chain{stream: events.ClusterStream}}
	mustApply(t, f.c.Apply, f.ch.next(t, &events.PoolCreated{Name: "p", BlockSizeBits: 4, Subnets: subnets}))
	return f
}

func (f *reserveFold) try(p events.Payload) error {
	f.t.Helper()
	saved := *f.ch
	before, _ := projection.StateHash(f.c)
	err := f.c.Apply(f.ch.next(f.t, p))
	if err != nil {
		*f.ch = saved
		if after, _ := projection.StateHash(f.c); after != before {
			f.t.Fatalf("a refused %s changed the state", p.EventType())
		}
	}
	return err
}

func (f *reserveFold) reserved() string {
	var out []string
	for _, r := range f.c.Pools["p"].Reserved {
		out = append(out, r.Range().String()+"("+r.Reason+")")
	}
	return strings.Join(out, " ")
}

func TestReservationFold(t *testing.T) {
	f := newReserveFold(t, events.Subnet{IPv4: pfx("10.0.0.0/24")}, events.Subnet{IPv4: pfx("10.0.1.0/24")})
	ok := func(p events.Payload) {
		t.Helper()
		if err := f.try(p); err != nil {
			t.Fatal(err)
		}
	}
	ok(&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.1.0", "10.0.1.15"), rng("10.0.0.5", "10.0.0.5")}, Reason: "a"})
	ok(&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.6", "10.0.0.9")}, Reason: "b", AfterRelease: true})
	if got, want := f.reserved(), "10.0.0.5(a) 10.0.0.6-10.0.0.9(b) 10.0.1.0-10.0.1.15(a)"; got != want {
		t.Fatalf("reserved = %s, want %s", got, want)
	}
	p := f.c.Pools["p"]
	if r, found := p.ReservationOf(addr("10.0.0.7")); !found || r.Reason != "b" || !r.AfterRelease || r.Actor != "test" {
		t.Fatalf("ReservationOf(10.0.0.7) = %+v, %v", r, found)
	}
	for _, a := range []string{"10.0.0.4", "10.0.0.10", "10.0.1.16", "fd00::5"} {
		if p.Excluded(addr(a)) {
			t.Errorf("%s excluded", a)
		}
	}
	if !p.BlockExcluded(16) || p.BlockExcluded(0) || p.BlockExcluded(17) {
		t.Fatalf("BlockExcluded: block 16 (10.0.1.0/28) is wholly reserved, blocks 0 and 17 are not")
	}
	if off, found := p.FirstUsable(16); found {
		t.Fatalf("FirstUsable(16) = %d", off)
	}

	// Unreserving the middle of a range leaves two pieces with their reason.
	ok(&events.AddressesUnreserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.1.4", "10.0.1.7")}})
	// Across two adjacent reservations.
	ok(&events.AddressesUnreserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.5", "10.0.0.6")}, Reason: "done"})
	if got, want := f.reserved(), "10.0.0.7-10.0.0.9(b) 10.0.1.0-10.0.1.3(a) 10.0.1.8-10.0.1.15(a)"; got != want {
		t.Fatalf("reserved = %s, want %s", got, want)
	}
	if off, found := f.c.Pools["p"].FirstUsable(16); !found || off != 4 {
		t.Fatalf("FirstUsable(16) = %d, %v; want 4", off, found)
	}

	for name, c := range map[string]struct {
		p    events.Payload
		want string
	}{
		"overlap":        {&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.9", "10.0.0.12")}}, "overlaps reserved range 10.0.0.7-10.0.0.9"},
		"self-overlap":   {&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.20", "10.0.0.22"), rng("10.0.0.22", "10.0.0.30")}}, "overlaps reserved range 10.0.0.20-10.0.0.22"},
		"outside":        {&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.2.1", "10.0.2.1")}}, "not inside a subnet of pool"},
		"across subnets": {&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.250", "10.0.1.100")}}, "not inside a subnet"},
		"backwards":      {&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.30", "10.0.0.20")}}, "ends before it starts"},
		"mixed":          {&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.30", "fd00::1")}}, "mixes IPv4 and IPv6"},
		"empty":          {&events.AddressesReserved{Pool: "p"}, "no range"},
		"no pool":        {&events.AddressesReserved{Pool: "q", Ranges: []events.AddrRange{rng("10.0.0.30", "10.0.0.30")}}, `pool "q" does not exist`},
		"unreserve free": {&events.AddressesUnreserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.8", "10.0.0.11")}}, "address 10.0.0.10 of range"},
		"unreserve none": {&events.AddressesUnreserved{Pool: "p", Ranges: []events.AddrRange{rng("10.0.0.100", "10.0.0.100")}}, "address 10.0.0.100 of range"},
		"option no pool": {&events.PoolNetworkBroadcastSet{Pool: "q", Skip: true}, `pool "q" does not exist`},
	} {
		err := f.try(c.p)
		if !errors.Is(err, projection.ErrInvalidEvent) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent with %q", name, err, c.want)
		}
	}
}

// A pool without PoolNetworkBroadcastSet hands out its network and broadcast addresses
// (pools made before the option keep their addresses and their state hash); with the
// option it skips them in IPv4 subnets up to /30, never in IPv6.
func TestNetworkBroadcast(t *testing.T) {
	f := newReserveFold(t, events.Subnet{IPv4: pfx("10.0.0.0/24"), IPv6: pfx("fd00::/120")}, events.Subnet{IPv4: pfx("10.0.1.0/31"), IPv6: pfx("fd00:1::/127")})
	p := f.c.Pools["p"]
	before, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if p.HasExclusions() || p.Excluded(addr("10.0.0.0")) {
		t.Fatal("a pool without the option excludes its network address")
	}
	if err := f.try(&events.PoolNetworkBroadcastSet{Pool: "p", Skip: true}); err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"10.0.0.0": true, "10.0.0.255": true, "10.0.0.1": false, "10.0.1.0": false, "10.0.1.1": false, "fd00::": false, "fd00::ff": false} {
		if got := p.Excluded(addr(a)); got != want {
			t.Errorf("Excluded(%s) = %v, want %v", a, got, want)
		}
	}
	// Dual stack: offset 0 of block 0 is out in both families, IPv6 included.
	prefixes, _ := p.Block(0)
	if !p.OffsetExcluded(prefixes, 0) || p.OffsetExcluded(prefixes, 1) {
		t.Fatal("offset 0 of block 0 must be excluded, offset 1 not")
	}
	if off, ok := p.FirstUsable(0); !ok || off != 1 {
		t.Fatalf("FirstUsable(0) = %d, %v", off, ok)
	}
	if off, ok := p.FirstUsable(15); !ok || off != 0 {
		t.Fatalf("FirstUsable(15) = %d, %v", off, ok)
	}
	if err := f.try(&events.PoolNetworkBroadcastSet{Pool: "p", Skip: false}); err != nil {
		t.Fatal(err)
	}
	if p.Excluded(addr("10.0.0.0")) {
		t.Fatal("option off: 10.0.0.0 still excluded")
	}
	// Off again, the pool encodes (and so hashes) as it did before the option.
	if after, _ := json.Marshal(p); string(after) != string(before) {
		t.Fatalf("pool with the option off: %s, before it: %s", after, before)
	}
}

// A single-address block made of a network address is wholly excluded.
func TestBlockOfNetworkAddressExcluded(t *testing.T) {
	c := projection.NewCluster()
	ch := &chain{stream: events.ClusterStream}
	mustApply(t, c.Apply, ch.next(t, &events.PoolCreated{Name: "p", BlockSizeBits: 0, Subnets: []events.Subnet{{IPv4: pfx("10.0.0.0/28")}}}))
	mustApply(t, c.Apply, ch.next(t, &events.PoolNetworkBroadcastSet{Pool: "p", Skip: true}))
	p := c.Pools["p"]
	if !p.BlockExcluded(0) || !p.BlockExcluded(15) || p.BlockExcluded(1) {
		t.Fatal("blocks 0 and 15 are the network and broadcast address")
	}
}
