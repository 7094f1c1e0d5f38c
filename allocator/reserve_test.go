package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"
	"pgregory.net/rapid"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

func ranges(t testing.TB, specs ...string) []events.AddrRange {
	t.Helper()
	var out []events.AddrRange
	for _, s := range specs {
		r, err := allocator.ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestParseRange(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5":              "10.0.0.5",
		"10.0.0.4/30":           "10.0.0.4-10.0.0.7",
		"10.0.0.5/32":           "10.0.0.5",
		"10.0.0.1-10.0.0.9":     "10.0.0.1-10.0.0.9",
		"fd00::/126":            "fd00::-fd00::3",
		"fd00::10 - fd00::1f":   "fd00::10-fd00::1f",
		"10.0.0.0/8":            "10.0.0.0-10.255.255.255",
		"2001:db8::/32":         "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
		"10.0.0.255-10.0.1.0":   "10.0.0.255-10.0.1.0",
		"10.0.0.255-10.0.0.255": "10.0.0.255",
	} {
		r, err := allocator.ParseRange(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseRange(%q) = %s, %v; want %s", in, r, err, want)
		}
	}
	for in, want := range map[string]string{
		"":                    "is not an IP address",
		"10.0.0":              "is not an IP address",
		"10.0.0.1/24":         "host bits set: did you mean 10.0.0.0/24?",
		"10.0.0.0/33":         "not a CIDR prefix",
		"10.0.0.9-10.0.0.1":   "ends before it starts",
		"10.0.0.1-fd00::1":    "mixes IPv4 and IPv6",
		"fe80::1%eth0":        "zones are not allowed",
		"::ffff:10.0.0.1":     "IPv4-mapped",
		"10.0.0.1-":           "is not an IP address",
		"10.0.0.1-10.0.0.2-3": "is not an IP address",
	} {
		_, err := allocator.ParseRange(in)
		if !errors.Is(err, allocator.ErrInvalidRange) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRange(%q): err = %v, want ErrInvalidRange with %q", in, err, want)
		}
	}
}

// Every address a pool hands out is neither reserved nor, with the option, a network or
// broadcast address; wholly reserved blocks are not taken; the pool runs out when only
// excluded addresses are left.
func TestReservedAddressesSkipped(t *testing.T) {
	for _, layout := range []string{"split", "legacy"} {
		t.Run(layout, func(t *testing.T) {
			e := newEnv(t)
			if layout == "legacy" {
				e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
			}
			opts := append(slices.Clone(e.poolOpts), allocator.SkipNetworkBroadcast(true),
				allocator.ReserveRanges(ranges(t, "10.0.0.1-10.0.0.2", "10.0.0.4/30", "10.0.0.9"), "test"))
			if err := e.admin.CreatePool(context.Background(), pool(t, "p", 2, "10.0.0.0/28"), opts...); err != nil {
				t.Fatal(err)
			}
			n := e.node("n1", nil)
			var got []string
			for i := 0; ; i++ {
				a, err := n.Allocate(context.Background(), allocator.Request{ContainerID: fmt.Sprint("c", i), IfName: "eth0", Pool: "p"})
				if errors.Is(err, allocator.ErrExhausted) {
					if !strings.Contains(err.Error(), "wholly reserved") {
						t.Fatalf("exhausted: %v", err)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, a.Addrs[0].String())
			}
			sort.Slice(got, func(i, j int) bool { return netip.MustParseAddr(got[i]).Less(netip.MustParseAddr(got[j])) })
			want := "10.0.0.3 10.0.0.8 10.0.0.10 10.0.0.11 10.0.0.12 10.0.0.13 10.0.0.14"
			if strings.Join(got, " ") != want {
				t.Fatalf("handed out %v, want %s", got, want)
			}
			st := replayAll(t, e.log)
			for i := range st.PoolOwners("p") {
				if i == 1 {
					t.Fatal("block 1 (10.0.0.4/30, wholly reserved) was taken")
				}
			}
		})
	}
}

func TestReserveRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.pool("p", 3, "10.0.0.0/26,fd00::/122")
	e.pool("q", 3, "10.1.0.0/26")
	n := e.node("n1", nil)
	a := alloc(t, n, "c1", "p") // 10.0.0.0 and fd00:: (the option is off: Admin's default)
	if a.Addrs[0] != netip.MustParseAddr("10.0.0.0") {
		t.Fatalf("first address %v (a pool without the option hands out its network address)", a.Addrs[0])
	}
	if _, err := e.admin.Reserve(ctx, allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.5"), Reason: "vip"}); err != nil {
		t.Fatal(err)
	}
	head := func() events.Version {
		v, _, err := e.log.Head(ctx, events.ClusterStream)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := head()
	for name, c := range map[string]struct {
		req  allocator.ReserveRequest
		is   error
		want string
	}{
		"in use":          {allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.0/30")}, allocator.ErrAddressInUse, "1 addresses of the ranges are in use: 10.0.0.0 (pod ns/pod-c1 on node n1)"},
		"in use, IPv6":    {allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "fd00::")}, allocator.ErrAddressInUse, "fd00:: (pod ns/pod-c1 on node n1)"},
		"overlap":         {allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.4-10.0.0.6")}, allocator.ErrReservation, `range 10.0.0.4-10.0.0.6 overlaps 10.0.0.5, reserved by test at 2026-`},
		"self overlap":    {allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.8/29", "10.0.0.10")}, allocator.ErrInvalidRange, "ranges 10.0.0.8-10.0.0.15 and 10.0.0.10 overlap"},
		"outside":         {allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.1.0.1")}, allocator.ErrInvalidRange, `range 10.1.0.1 is not inside a subnet of pool "p" (10.0.0.0/26,fd00::/122)`},
		"straddles":       {allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.60-10.0.0.70")}, allocator.ErrInvalidRange, "not inside a subnet"},
		"none":            {allocator.ReserveRequest{Pool: "p"}, allocator.ErrInvalidRange, "no range given"},
		"no pool":         {allocator.ReserveRequest{Pool: "nope", Ranges: ranges(t, "10.0.0.1")}, allocator.ErrPoolNotFound, `"nope"`},
		"other pool's in": {allocator.ReserveRequest{Pool: "q", Ranges: ranges(t, "10.0.0.1")}, allocator.ErrInvalidRange, `not inside a subnet of pool "q"`},
	} {
		_, err := e.admin.Reserve(ctx, c.req)
		if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %v with %q", name, err, c.is, c.want)
		}
	}
	for name, c := range map[string]struct {
		rs   []events.AddrRange
		is   error
		want string
	}{
		"not reserved": {ranges(t, "10.0.0.4-10.0.0.5"), allocator.ErrReservation, "address 10.0.0.4 of range 10.0.0.4-10.0.0.5 is not reserved"},
		"outside":      {ranges(t, "10.9.0.5"), allocator.ErrInvalidRange, "not inside a subnet"},
		"none":         {nil, allocator.ErrInvalidRange, "no range given"},
	} {
		if err := e.admin.Unreserve(ctx, "p", c.rs, ""); !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("unreserve %s: err = %v, want %q", name, err, c.want)
		}
	}
	if head() != before {
		t.Fatal("a refused request wrote to the cluster stream")
	}

	// --after-release: the holder keeps it, and nobody gets it once it is released.
	held, err := e.admin.Reserve(ctx, allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.0"), Reason: "gw", AfterRelease: true})
	if err != nil || len(held) != 1 || held[0].PodName != "pod-c1" || held[0].Node != "n1" {
		t.Fatalf("after-release: %v, %v", held, err)
	}
	if _, ok := n.Lookup("c1", "eth0"); !ok {
		t.Fatal("the holder lost its address")
	}
	if _, err = n.Release(ctx, "c1", "eth0", "gone"); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		a := alloc(t, n, fmt.Sprint("d", i), "p")
		if s := a.Addrs[0].String(); s == "10.0.0.0" || s == "10.0.0.5" || a.Addrs[1].String() == "fd00::" || a.Addrs[1].String() == "fd00::5" {
			t.Fatalf("reserved offset handed out: %v", a.Addrs)
		}
	}
	// Unreserve gives it back (one of the two).
	if err = e.admin.Unreserve(ctx, "p", ranges(t, "10.0.0.5"), "vip moved"); err != nil {
		t.Fatal(err)
	}
	c, err := e.admin.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rs := c.Pools["p"].Reserved; len(rs) != 1 || rs[0].Range().String() != "10.0.0.0" || !rs[0].AfterRelease || rs[0].Reason != "gw" {
		t.Fatalf("reservations = %+v", rs)
	}
}

// A node that decided against a cluster state without a reservation made since does not
// hand the address out: its append is guarded on the cluster stream, and it decides again.
func TestReserveRacesNode(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.pool("p", 3, "10.0.0.0/26")
	n := e.node("n1", nil) // no watch runs: the node learns of the reservation only by the guard
	if got := alloc(t, n, "c1", "p").Addrs[0].String(); got != "10.0.0.0" {
		t.Fatalf("first address %s", got)
	}
	if _, err := e.admin.Reserve(ctx, allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.1-10.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	if got := alloc(t, n, "c2", "p").Addrs[0].String(); got != "10.0.0.3" {
		t.Fatalf("second address %s, want 10.0.0.3 (10.0.0.1-2 reserved after the node last read the cluster)", got)
	}
}

// SetNetworkBroadcast turns the option on and off; setting what is set writes nothing.
func TestSetNetworkBroadcast(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.pool("p", 2, "10.0.0.0/28")
	if changed, err := e.admin.SetNetworkBroadcast(ctx, "p", false); err != nil || changed {
		t.Fatalf("off on a pool without the option: %v, %v", changed, err)
	}
	if changed, err := e.admin.SetNetworkBroadcast(ctx, "p", true); err != nil || !changed {
		t.Fatalf("on: %v, %v", changed, err)
	}
	n := e.node("n1", nil)
	if got := alloc(t, n, "c1", "p").Addrs[0].String(); got != "10.0.0.1" {
		t.Fatalf("first address %s, want 10.0.0.1", got)
	}
	if _, err := e.admin.SetNetworkBroadcast(ctx, "nope", true); !errors.Is(err, allocator.ErrPoolNotFound) {
		t.Fatalf("no pool: %v", err)
	}
}

// A level-1 feature on a cluster held back by an old coild is refused, and writes nothing.
func TestReserveNeedsLevel(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if err := e.admin.CreatePool(ctx, pool(t, "p", 2, "10.0.0.0/28"), allocator.LegacyLayout()); err != nil {
		t.Fatal(err)
	}
	e.admin.Live = fixedLive{{Node: "old", Level: events.LevelBase, Legacy: true}}
	if _, err := e.admin.Reserve(ctx, allocator.ReserveRequest{Pool: "p", Ranges: ranges(t, "10.0.0.3")}); !errors.Is(err, allocator.ErrLevel) {
		t.Fatalf("reserve below level 1: %v", err)
	}
	if _, err := e.admin.SetNetworkBroadcast(ctx, "p", true); !errors.Is(err, allocator.ErrLevel) {
		t.Fatalf("option below level 1: %v", err)
	}
	// The default of coilctl falls back to the old behaviour.
	if err := e.admin.CreatePool(ctx, pool(t, "q", 2, "10.1.0.0/28"), allocator.LegacyLayout(), allocator.SkipNetworkBroadcastIfLevel()); err != nil {
		t.Fatal(err)
	}
	c, err := e.admin.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Level != events.LevelBase || c.Pools["q"].SkipNetworkBroadcast || len(c.Pools["p"].Reserved) > 0 {
		t.Fatalf("level %d, q skips %v, p reserved %v", c.Level, c.Pools["q"].SkipNetworkBroadcast, c.Pools["p"].Reserved)
	}
}

// Property: whatever the interleaving of reservations, unreservations, option changes,
// allocations and releases on several nodes, no AddressAssigned ever hands out an address
// that the cluster excluded at that moment (folding the whole log in revision order).
func TestPropertyNeverReserved(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		e := newEnv(t)
		defer e.close()
		ctx := context.Background()
		if rapid.Bool().Draw(rt, "legacy") {
			e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
		}
		e.pool("a", 2, "10.0.0.0/27")
		e.pool("b", 1, "10.1.0.0/28,fd00:b::/124")
		subnets := map[string]netip.Prefix{"a": pfx("10.0.0.0/27"), "b": pfx("10.1.0.0/28")}
		nodes := []*allocator.Node{e.node("n1", nil), e.node("n2", nil)}
		held := map[int][]string{}
		next := 0
		for range rapid.IntRange(10, 60).Draw(rt, "steps") {
			ni := rapid.IntRange(0, len(nodes)-1).Draw(rt, "node")
			p := rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "pool")
			sub := subnets[p]
			switch rapid.IntRange(0, 7).Draw(rt, "op") {
			case 0, 1, 2:
				next++
				id := fmt.Sprint("c", next)
				_, err := nodes[ni].Allocate(ctx, allocator.Request{ContainerID: id, IfName: "eth0", Pool: p})
				switch {
				case err == nil:
					held[ni] = append(held[ni], id)
				case errors.Is(err, allocator.ErrExhausted):
				default:
					rt.Fatalf("allocate: %v", err)
				}
			case 3:
				if len(held[ni]) == 0 {
					continue
				}
				id := held[ni][0]
				held[ni] = held[ni][1:]
				if _, err := nodes[ni].Release(ctx, id, "eth0", "test"); err != nil {
					rt.Fatalf("release: %v", err)
				}
			case 4, 5:
				size := uint64(1) << (32 - sub.Bits())
				first := rapid.Uint64Range(0, size-1).Draw(rt, "first")
				last := rapid.Uint64Range(first, min(first+5, size-1)).Draw(rt, "last")
				r := events.AddrRange{First: projection.AddrAt(sub, first), Last: projection.AddrAt(sub, last)}
				_, err := e.admin.Reserve(ctx, allocator.ReserveRequest{Pool: p, Ranges: []events.AddrRange{r}, AfterRelease: rapid.Bool().Draw(rt, "after")})
				if err != nil && !errors.Is(err, allocator.ErrReservation) && !errors.Is(err, allocator.ErrAddressInUse) {
					rt.Fatalf("reserve %s: %v", r, err)
				}
			case 6:
				c, err := e.admin.Cluster(ctx)
				if err != nil {
					rt.Fatal(err)
				}
				if rs := c.Pools[p].Reserved; len(rs) > 0 {
					r := rapid.SampledFrom(rs).Draw(rt, "unreserve")
					if err := e.admin.Unreserve(ctx, p, []events.AddrRange{r.Range()}, ""); err != nil {
						rt.Fatalf("unreserve: %v", err)
					}
				}
			case 7:
				if _, err := e.admin.SetNetworkBroadcast(ctx, p, rapid.Bool().Draw(rt, "skip")); err != nil {
					rt.Fatal(err)
				}
			}
		}
		checkNeverExcluded(rt, e.log)
		checkInvariants(t, e.log, nil)
	})
}

// checkNeverExcluded folds every event of the log in revision order and checks each
// AddressAssigned against the pools as they were then.
func checkNeverExcluded(rt *rapid.T, log events.Log) {
	var all []*events.Event
	if _, err := log.ReadPrefix(context.Background(), "", 0, func(e *events.Event) error { all = append(all, e); return nil }); err != nil {
		rt.Fatal(err)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Revision < all[j].Revision })
	st := projection.NewState()
	for _, e := range all {
		if p, ok := e.Payload.(*events.AddressAssigned); ok {
			pool := st.Cluster.Pools[p.Pool]
			for _, a := range p.Addrs {
				if pool.Excluded(a) {
					rt.Fatalf("%s #%d hands out %s, excluded in pool %s (reserved %v, network/broadcast skipped %v)",
						e.Stream, e.Seq, a, p.Pool, pool.Reserved, pool.SkipNetworkBroadcast)
				}
			}
		}
		if err := st.Apply(e); err != nil {
			rt.Fatal(err)
		}
	}
}

// fixedLive is a LiveNodes that reports the given coilds.
type fixedLive []events.LiveNode

func (f fixedLive) LiveNodes(context.Context, bool) ([]events.LiveNode, int64, error) {
	return f, 0, nil
}
