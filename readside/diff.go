package readside

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// Diff is what changed from one state to another (DiffStates). Its JSON form is coilctl
// diff's -o json; the lists are never nil.
type Diff struct {
	From DiffEnd `json:"from"`
	To   DiffEnd `json:"to"`
	// FeatureLevel is the cluster's feature level at both ends, when it changed.
	FeatureLevel *LevelChange `json:"featureLevel,omitempty"`
	Pools        struct {
		Added    []PoolChange `json:"added"`
		Extended []PoolChange `json:"extended"`
		Removed  []PoolChange `json:"removed"`
		// Changed: node selectors and enabled/disabled of pools at both ends.
		Changed []PoolSettingChange `json:"changed,omitempty"`
	} `json:"pools"`
	// NodeLabels: nodes whose recorded labels (NodeLabelsSet) differ between the ends.
	NodeLabels []NodeLabelsChange `json:"nodeLabels,omitempty"`
	Blocks     struct {
		Assigned []BlockChange `json:"assigned"`
		Released []BlockChange `json:"released"`
	} `json:"blocks"`
	Addresses struct {
		Assigned []AddressChange `json:"assigned"`
		Released []AddressChange `json:"released"`
	} `json:"addresses"`
	// Reservations are reserved ranges present at one end only (a reservation trimmed
	// by an unreserve is removed and its remaining pieces added).
	Reservations struct {
		Added   []ReservationChange `json:"added"`
		Removed []ReservationChange `json:"removed"`
	} `json:"reservations"`
	// Options are pool options that differ between the ends (pools present at both).
	Options []OptionChange `json:"options"`
	// Claims are fixed-address claims standing at one end only (AddressClaimed,
	// AddressClaimReleased).
	Claims struct {
		Added   []PoolClaim `json:"added"`
		Removed []PoolClaim `json:"removed"`
	} `json:"claims"`
}

// PoolClaim is a standing fixed-address claim in pool Pool.
type PoolClaim struct {
	Pool string `json:"pool"`
	projection.Claim
}

// Claims lists the fixed-address claims standing in st, ordered by address.
func Claims(st *projection.State) []PoolClaim {
	out := []PoolClaim{}
	for pool, b := range st.Pools {
		for _, c := range b.Claims {
			out = append(out, PoolClaim{Pool: pool, Claim: *c})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addrs[0].Less(out[j].Addrs[0]) })
	return out
}

// ReservationChange is a reserved range of a pool.
type ReservationChange struct {
	Pool   string `json:"pool"`
	Range  string `json:"range"`
	Reason string `json:"reason,omitempty"`
}

// OptionChange is a pool option's value at both ends of a diff.
type OptionChange struct {
	Pool   string `json:"pool"`
	Option string `json:"option"` // "skipNetworkBroadcast"
	From   string `json:"from"`
	To     string `json:"to"`
}

// Empty reports whether nothing changed.
func (d *Diff) Empty() bool {
	return d.FeatureLevel == nil && len(d.Pools.Added)+len(d.Pools.Extended)+len(d.Pools.Removed)+len(d.Pools.Changed)+len(d.NodeLabels)+len(d.Blocks.Assigned)+
		len(d.Blocks.Released)+len(d.Addresses.Assigned)+len(d.Addresses.Released)+
		len(d.Reservations.Added)+len(d.Reservations.Removed)+len(d.Options)+len(d.Claims.Added)+len(d.Claims.Removed) == 0
}

// LevelChange is the cluster's feature level at both ends of a diff.
type LevelChange struct {
	From events.Level `json:"from"`
	To   events.Level `json:"to"`
}

// DiffEnd is one end of a diff: the revision its state reflects and the time of its
// newest event (nil for an empty state).
type DiffEnd struct {
	Revision int64      `json:"revision"`
	Time     *time.Time `json:"time"`
}

// PoolChange is a pool that exists at one end of a diff and not at the other (or whose
// subnets changed).
type PoolChange struct {
	Name    string   `json:"name"`
	Subnets []string `json:"subnets"`
	// Added lists the subnets added to a pool that existed at both ends.
	Added []string `json:"addedSubnets,omitempty"`
}

// PoolSettingChange is a setting of a pool that exists at both ends: Setting is
// "nodeSelector" ("" = every node) or "state" ("enabled", "disabled").
type PoolSettingChange struct {
	Name    string `json:"name"`
	Setting string `json:"setting"`
	From    string `json:"from"`
	To      string `json:"to"`
}

// NodeLabelsChange is a node's recorded labels at both ends ("k=v,..." sorted; "" none).
type NodeLabelsChange struct {
	Node string `json:"node"`
	From string `json:"from"`
	To   string `json:"to"`
}

func poolState(p *projection.Pool) string {
	if p.Disabled {
		return "disabled"
	}
	return "enabled"
}

// BlockChange is a block that changed hands between the two ends.
type BlockChange struct {
	Pool     string   `json:"pool"`
	Index    uint64   `json:"index"`
	Prefixes []string `json:"prefixes"`
	Node     string   `json:"node"`
}

// AddressChange is an attachment's addresses that were held at one end and not the other.
type AddressChange struct {
	Addrs        []netip.Addr `json:"addrs"`
	Pool         string       `json:"pool"`
	Node         string       `json:"node"`
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	Since        time.Time    `json:"since"`
}

func endOf(st *StateAt) DiffEnd {
	e := DiffEnd{Revision: st.Rev}
	if !st.Time.IsZero() {
		t := st.Time
		e.Time = &t
	}
	return e
}

// DiffStates compares two states, not the way between them: pools by name (added,
// extended by subnets, removed), blocks by pool, index and owner, addresses by node,
// container, interface, assignment and addresses. A block or address that changed hands
// is released by the old holder and assigned to the new one. Lists are sorted (pools by
// name, blocks by pool and index, addresses by first address and node).
func DiffStates(from, to *StateAt) *Diff {
	d := &Diff{From: endOf(from), To: endOf(to)}
	if from.Cluster.Level != to.Cluster.Level {
		d.FeatureLevel = &LevelChange{From: from.Cluster.Level, To: to.Cluster.Level}
	}
	d.Pools.Added, d.Pools.Extended, d.Pools.Removed = []PoolChange{}, []PoolChange{}, []PoolChange{}
	d.Blocks.Assigned, d.Blocks.Released = []BlockChange{}, []BlockChange{}
	d.Addresses.Assigned, d.Addresses.Released = []AddressChange{}, []AddressChange{}

	for _, name := range slices.Sorted(maps.Keys(to.Cluster.Pools)) {
		p := to.Cluster.Pools[name]
		old, ok := from.Cluster.Pools[name]
		switch {
		case !ok:
			d.Pools.Added = append(d.Pools.Added, PoolChange{Name: name, Subnets: subnetStrings(p.Subnets)})
		case len(p.Subnets) > len(old.Subnets):
			d.Pools.Extended = append(d.Pools.Extended, PoolChange{Name: name, Subnets: subnetStrings(p.Subnets),
				Added: subnetStrings(p.Subnets[len(old.Subnets):])})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(to.Cluster.Pools)) {
		p, old := to.Cluster.Pools[name], from.Cluster.Pools[name]
		if old == nil {
			continue
		}
		if p.NodeSelector != old.NodeSelector {
			d.Pools.Changed = append(d.Pools.Changed, PoolSettingChange{Name: name, Setting: "nodeSelector", From: old.NodeSelector, To: p.NodeSelector})
		}
		if p.Disabled != old.Disabled {
			d.Pools.Changed = append(d.Pools.Changed, PoolSettingChange{Name: name, Setting: "state", From: poolState(old), To: poolState(p)})
		}
	}
	nodes := map[string]bool{}
	for name := range to.Nodes {
		nodes[name] = true
	}
	for name := range from.Nodes {
		nodes[name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(nodes)) {
		var a, b string
		if n := from.Nodes[name]; n != nil {
			a = projection.LabelsString(n.Labels)
		}
		if n := to.Nodes[name]; n != nil {
			b = projection.LabelsString(n.Labels)
		}
		if a != b {
			d.NodeLabels = append(d.NodeLabels, NodeLabelsChange{Node: name, From: a, To: b})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(from.Cluster.Pools)) {
		if _, ok := to.Cluster.Pools[name]; !ok {
			d.Pools.Removed = append(d.Pools.Removed, PoolChange{Name: name, Subnets: subnetStrings(from.Cluster.Pools[name].Subnets)})
		}
	}

	blocksOf := func(st *StateAt) map[projection.BlockRef]string {
		out := map[projection.BlockRef]string{}
		for pool, owners := range st.AllOwners() {
			for idx, o := range owners {
				out[projection.BlockRef{Pool: pool, Index: idx}] = o.Node
			}
		}
		return out
	}
	fb, tb := blocksOf(from), blocksOf(to)
	block := func(st *StateAt, ref projection.BlockRef, node string) BlockChange {
		c := BlockChange{Pool: ref.Pool, Index: ref.Index, Node: node, Prefixes: []string{}}
		if p := st.Cluster.Pools[ref.Pool]; p != nil {
			ps, _ := p.Block(ref.Index)
			for _, pf := range ps {
				c.Prefixes = append(c.Prefixes, pf.String())
			}
		}
		return c
	}
	for ref, node := range tb {
		if fb[ref] != node {
			d.Blocks.Assigned = append(d.Blocks.Assigned, block(to, ref, node))
		}
	}
	for ref, node := range fb {
		if tb[ref] != node {
			d.Blocks.Released = append(d.Blocks.Released, block(from, ref, node))
		}
	}
	sortBlocks := func(bs []BlockChange) {
		sort.Slice(bs, func(i, j int) bool {
			if bs[i].Pool != bs[j].Pool {
				return bs[i].Pool < bs[j].Pool
			}
			return bs[i].Index < bs[j].Index
		})
	}
	sortBlocks(d.Blocks.Assigned)
	sortBlocks(d.Blocks.Released)

	type attKey struct {
		node string
		key  projection.AttachKey
	}
	attsOf := func(st *StateAt) map[attKey]*projection.Assignment {
		out := map[attKey]*projection.Assignment{}
		for node, n := range st.Nodes {
			for k, asg := range n.Attached {
				out[attKey{node, k}] = asg
			}
		}
		return out
	}
	fa, ta := attsOf(from), attsOf(to)
	same := func(a, b *projection.Assignment) bool {
		return a != nil && b != nil && a.Seq == b.Seq && slices.Equal(a.Addrs, b.Addrs)
	}
	change := func(k attKey, asg *projection.Assignment) AddressChange {
		return AddressChange{Addrs: asg.Addrs, Pool: asg.Pool, Node: k.node, ContainerID: k.key.ContainerID, IfName: k.key.IfName,
			PodNamespace: asg.PodNamespace, PodName: asg.PodName, Since: asg.Since}
	}
	for k, asg := range ta {
		if !same(fa[k], asg) {
			d.Addresses.Assigned = append(d.Addresses.Assigned, change(k, asg))
		}
	}
	for k, asg := range fa {
		if !same(ta[k], asg) {
			d.Addresses.Released = append(d.Addresses.Released, change(k, asg))
		}
	}
	sortAddrs := func(as []AddressChange) {
		sort.Slice(as, func(i, j int) bool {
			if as[i].Addrs[0] != as[j].Addrs[0] {
				return as[i].Addrs[0].Less(as[j].Addrs[0])
			}
			return as[i].Node < as[j].Node
		})
	}
	sortAddrs(d.Addresses.Assigned)
	sortAddrs(d.Addresses.Released)
	diffReservations(d, from, to)
	diffClaims(d, from, to)
	return d
}

// diffClaims fills the claims part of d: a claim is the same at both ends when its
// pool, addresses, holder and time are.
func diffClaims(d *Diff, from, to *StateAt) {
	key := func(c PoolClaim) string {
		return fmt.Sprint(c.Pool, c.Addrs, c.Node, c.ContainerID, c.IfName, c.Since.UnixNano())
	}
	d.Claims.Added, d.Claims.Removed = setDiff(Claims(from.State.State), Claims(to.State.State), key)
}

// setDiff returns the items of to whose key is not in from (in to's order) and those of
// from whose key is not in to (in from's order); empty, not nil, when none.
func setDiff[T any, K comparable](from, to []T, key func(T) K) (added, removed []T) {
	in := func(xs []T) map[K]bool {
		m := make(map[K]bool, len(xs))
		for _, x := range xs {
			m[key(x)] = true
		}
		return m
	}
	fk, tk := in(from), in(to)
	added, removed = []T{}, []T{}
	for _, x := range to {
		if !fk[key(x)] {
			added = append(added, x)
		}
	}
	for _, x := range from {
		if !tk[key(x)] {
			removed = append(removed, x)
		}
	}
	return added, removed
}

// diffReservations fills the reservation and option parts of d.
func diffReservations(d *Diff, from, to *StateAt) {
	d.Options = []OptionChange{}
	type poolRes struct {
		pool string
		res  projection.Reservation
	}
	resOf := func(st *StateAt) []poolRes {
		var out []poolRes
		for name, p := range st.Cluster.Pools {
			for _, r := range p.Reserved {
				out = append(out, poolRes{name, r})
			}
		}
		return out
	}
	added, removed := setDiff(resOf(from), resOf(to), func(r poolRes) poolRes { return r })
	change := func(rs []poolRes) []ReservationChange {
		out := make([]ReservationChange, len(rs))
		for i, r := range rs {
			out[i] = ReservationChange{Pool: r.pool, Range: r.res.Range().String(), Reason: r.res.Reason}
		}
		return out
	}
	d.Reservations.Added, d.Reservations.Removed = change(added), change(removed)
	sortRes := func(rs []ReservationChange) {
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Pool != rs[j].Pool {
				return rs[i].Pool < rs[j].Pool
			}
			a, _ := netip.ParseAddr(strings.SplitN(rs[i].Range, "-", 2)[0])
			b, _ := netip.ParseAddr(strings.SplitN(rs[j].Range, "-", 2)[0])
			return a.Less(b)
		})
	}
	sortRes(d.Reservations.Added)
	sortRes(d.Reservations.Removed)
	for _, name := range slices.Sorted(maps.Keys(to.Cluster.Pools)) {
		old, ok := from.Cluster.Pools[name]
		if p := to.Cluster.Pools[name]; ok && old.SkipNetworkBroadcast != p.SkipNetworkBroadcast {
			d.Options = append(d.Options, OptionChange{Pool: name, Option: "skipNetworkBroadcast",
				From: strconv.FormatBool(old.SkipNetworkBroadcast), To: strconv.FormatBool(p.SkipNetworkBroadcast)})
		}
	}
}

func subnetStrings(ss []events.Subnet) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	return out
}
