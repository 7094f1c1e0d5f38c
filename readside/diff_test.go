package readside_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/readside"
)

// describeDiff is a diff in lines, for comparisons.
func describeDiff(d *readside.Diff) string {
	var b strings.Builder
	for _, p := range d.Pools.Removed {
		fmt.Fprintf(&b, "- pool %s %v\n", p.Name, p.Subnets)
	}
	for _, p := range d.Pools.Added {
		fmt.Fprintf(&b, "+ pool %s %v\n", p.Name, p.Subnets)
	}
	for _, p := range d.Pools.Extended {
		fmt.Fprintf(&b, "+ subnet %s %v\n", p.Name, p.Added)
	}
	for _, o := range d.Options {
		fmt.Fprintf(&b, "~ option %s %s %s -> %s\n", o.Pool, o.Option, o.From, o.To)
	}
	for _, r := range d.Reservations.Removed {
		fmt.Fprintf(&b, "- reserved %s %s (%s)\n", r.Pool, r.Range, r.Reason)
	}
	for _, r := range d.Reservations.Added {
		fmt.Fprintf(&b, "+ reserved %s %s (%s)\n", r.Pool, r.Range, r.Reason)
	}
	for _, c := range d.Blocks.Released {
		fmt.Fprintf(&b, "- block %s#%d %v %s\n", c.Pool, c.Index, c.Prefixes, c.Node)
	}
	for _, c := range d.Blocks.Assigned {
		fmt.Fprintf(&b, "+ block %s#%d %v %s\n", c.Pool, c.Index, c.Prefixes, c.Node)
	}
	for _, c := range d.Addresses.Released {
		fmt.Fprintf(&b, "- address %v %s %s/%s\n", c.Addrs, c.Node, c.PodNamespace, c.PodName)
	}
	for _, c := range d.Addresses.Assigned {
		fmt.Fprintf(&b, "+ address %v %s %s/%s\n", c.Addrs, c.Node, c.PodNamespace, c.PodName)
	}
	for _, c := range d.Claims.Removed {
		fmt.Fprintf(&b, "- claim %v %s#%d %s %s/%s\n", c.Addrs, c.Pool, c.Block, c.Node, c.PodNamespace, c.PodName)
	}
	for _, c := range d.Claims.Added {
		fmt.Fprintf(&b, "+ claim %v %s#%d %s %s/%s\n", c.Addrs, c.Pool, c.Block, c.Node, c.PodNamespace, c.PodName)
	}
	return b.String()
}

// TestDiffStates: pools added, extended and removed; blocks and addresses that changed
// hands show as released by the old holder and assigned to the new; an address taken
// and given back between the ends does not show; equal states are an empty diff.
func TestDiffStates(t *testing.T) {
	log := memLog(t)
	w := smallLog(t, log)
	w.add(events.ClusterStream, at(6), pool("q", 4, "10.9.0.0/24"), &events.PoolSubnetAdded{Name: "p", Subnet: events.Subnet{IPv4: pfx("10.0.1.0/28")}})
	w.add(events.ClusterStream, at(7), &events.PoolDeleted{Name: "q"},
		&events.AddressesReserved{Pool: "p", Ranges: []events.AddrRange{{First: pfx("10.0.0.8/32").Addr(), Last: pfx("10.0.0.11/32").Addr()}}, Reason: "vip"},
		&events.AddressesUnreserved{Pool: "p", Ranges: []events.AddrRange{{First: pfx("10.0.0.9/32").Addr(), Last: pfx("10.0.0.9/32").Addr()}}},
		&events.PoolNetworkBroadcastSet{Pool: "p", Skip: true})
	fixed := assigned("c5eeeeeeeeeeeeeeee", "data", "db-1", "p", 2, "10.0.0.9") // a claim in block 2, which nobody owns
	w.add(events.PoolStream("p"), at(7.5), &events.AddressClaimed{Addrs: fixed.Addrs, Block: 2, Node: "n2", ContainerID: fixed.ContainerID,
		IfName: fixed.IfName, PodNamespace: "data", PodName: "db-1"})
	w.add(events.NodeStream("n2"), at(7.5), fixed)
	points := []readside.Point{{Time: at(2.5)}, {Time: at(5.5)}, {Time: at(6.5)}, {Time: at(8)}, {Time: at(0)}}
	sts, err := readside.StatesAt(t.Context(), log, points, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		from, to int
		want     string
	}{
		{0, 1, `- block p#1 [10.0.0.4/30] n2
+ block p#1 [10.0.0.4/30] n1
- address [10.0.0.0] n1 shop/web-0
- address [10.0.0.4] n2 data/db-0
+ address [10.0.0.1] n1 shop/web-1
+ address [10.0.0.4] n1 shop/web-0
`},
		{1, 2, `+ pool q [10.9.0.0/24]
+ subnet p [10.0.1.0/28]
`},
		{2, 3, `- pool q [10.9.0.0/24]
~ option p skipNetworkBroadcast false -> true
+ reserved p 10.0.0.8 (vip)
+ reserved p 10.0.0.10-10.0.0.11 (vip)
+ address [10.0.0.9] n2 data/db-1
+ claim [10.0.0.9] p#2 n2 data/db-1
`},
		{4, 1, `+ pool p [10.0.0.0/28]
+ block p#0 [10.0.0.0/30] n1
+ block p#1 [10.0.0.4/30] n1
+ address [10.0.0.1] n1 shop/web-1
+ address [10.0.0.4] n1 shop/web-0
`},
		{3, 1, `~ option p skipNetworkBroadcast true -> false
- reserved p 10.0.0.8 (vip)
- reserved p 10.0.0.10-10.0.0.11 (vip)
- address [10.0.0.9] n2 data/db-1
- claim [10.0.0.9] p#2 n2 data/db-1
`},
		{3, 3, ``},
	}
	for _, c := range cases {
		d := readside.DiffStates(sts[c.from], sts[c.to])
		if got := describeDiff(d); got != c.want {
			t.Errorf("diff %s -> %s:\n%s\nwant:\n%s", points[c.from], points[c.to], got, c.want)
		}
		if d.Empty() != (c.want == "") {
			t.Errorf("diff %s -> %s: Empty %v", points[c.from], points[c.to], d.Empty())
		}
	}
	d := readside.DiffStates(sts[4], sts[4])
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"from":{"revision":0,"time":null},"to":{"revision":0,"time":null},"pools":{"added":[],"extended":[],"removed":[]},"blocks":{"assigned":[],"released":[]},"addresses":{"assigned":[],"released":[]},"reservations":{"added":[],"removed":[]},"options":[],"claims":{"added":[],"removed":[]}}`
	if string(b) != want {
		t.Fatalf("empty diff JSON:\n%s\nwant:\n%s", b, want)
	}
}
