package projection

import (
	"net/netip"
	"sort"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// Reservation is a reserved range of a pool: its addresses are never handed out.
type Reservation struct {
	First netip.Addr `json:"first"`
	Last  netip.Addr `json:"last"`
	// Reason, Actor and Time are those of the AddressesReserved event that made it (a
	// range left over after an unreserve keeps them).
	Reason string    `json:"reason,omitempty"`
	Actor  string    `json:"actor"`
	Time   time.Time `json:"time"`
	// AfterRelease: pods held addresses of the range when it was reserved; each became
	// reserved as its holder released it.
	AfterRelease bool `json:"afterRelease,omitempty"`
}

// Range is the reservation's range.
func (r Reservation) Range() events.AddrRange { return events.AddrRange{First: r.First, Last: r.Last} }

// CheckRange checks that r is a well-formed range (valid addresses of one family, no
// zone, First <= Last) lying inside one subnet of the pool, and returns nil or an error
// that says what is wrong with it.
func (p *Pool) CheckRange(r events.AddrRange) error {
	if !r.First.IsValid() || !r.Last.IsValid() {
		return errors.Newf("range %s: an address is missing", r)
	}
	if r.First.Is4() != r.Last.Is4() || r.First.Is4In6() || r.Last.Is4In6() {
		return errors.Newf("range %s mixes IPv4 and IPv6", r)
	}
	if r.First.Zone() != "" || r.Last.Zone() != "" {
		return errors.Newf("range %s: zones are not allowed", r)
	}
	if r.Last.Less(r.First) {
		return errors.Newf("range %s ends before it starts", r)
	}
	for _, s := range p.Subnets {
		for _, sub := range []netip.Prefix{s.IPv4, s.IPv6} {
			if sub.IsValid() && sub.Contains(r.First) && sub.Contains(r.Last) {
				return nil
			}
		}
	}
	return errors.Newf("range %s is not inside a subnet of pool %q (%s)", r, p.Name, subnetList(p.Subnets))
}

func subnetList(ss []events.Subnet) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += " "
		}
		out += s.String()
	}
	return out
}

// rangesOverlap reports whether two ranges share an address.
func rangesOverlap(a, b events.AddrRange) bool {
	return a.First.Is4() == b.First.Is4() && !a.Last.Less(b.First) && !b.Last.Less(a.First)
}

// ReservationOverlapping returns the pool's first reservation that shares an address with
// r, if any.
func (p *Pool) ReservationOverlapping(r events.AddrRange) (Reservation, bool) {
	for _, res := range p.Reserved {
		if rangesOverlap(res.Range(), r) {
			return res, true
		}
	}
	return Reservation{}, false
}

// ReservationOf returns the reservation that holds a, if any (a binary search).
func (p *Pool) ReservationOf(a netip.Addr) (Reservation, bool) {
	rs := p.Reserved
	i := sort.Search(len(rs), func(i int) bool { return a.Less(rs[i].First) })
	if i > 0 && !rs[i-1].Last.Less(a) && rs[i-1].First.Is4() == a.Is4() {
		return rs[i-1], true
	}
	return Reservation{}, false
}

// IsNetworkOrBroadcast reports whether a is the first or the last address of an IPv4
// subnet of the pool of at most /30 (a /31 or /32 has no network or broadcast address).
func (p *Pool) IsNetworkOrBroadcast(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	for _, s := range p.Subnets {
		if sub := s.IPv4; sub.IsValid() && sub.Bits() <= 30 && (a == sub.Masked().Addr() || a == lastAddr(sub)) {
			return true
		}
	}
	return false
}

// lastAddr is the last address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	return addOffset(p.Addr(), 1<<(p.Addr().BitLen()-p.Bits())-1)
}

// Excluded reports whether the pool never hands out a: it is reserved, or it is an IPv4
// subnet's network or broadcast address in a pool that skips those.
func (p *Pool) Excluded(a netip.Addr) bool {
	if p.SkipNetworkBroadcast && p.IsNetworkOrBroadcast(a) {
		return true
	}
	if len(p.Reserved) == 0 {
		return false
	}
	_, ok := p.ReservationOf(a)
	return ok
}

// HasExclusions reports whether the pool excludes any address (Excluded is always
// false otherwise): the allocator's fast path.
func (p *Pool) HasExclusions() bool { return p.SkipNetworkBroadcast || len(p.Reserved) > 0 }

// OffsetExcluded reports whether offset off of the block whose prefixes are given (one
// per family) is never handed out: the address of any family there is Excluded (a pod
// gets the same offset in every family of a dual-stack pool).
func (p *Pool) OffsetExcluded(prefixes []netip.Prefix, off uint64) bool {
	if !p.HasExclusions() {
		return false
	}
	for _, pf := range prefixes {
		if p.Excluded(AddrAt(pf, off)) {
			return true
		}
	}
	return false
}

// FirstUsable is the lowest offset of block i that the pool hands out; false when
// every address of the block is excluded (or i is out of range). Without exclusions it
// is 0 at once; with them it scans the block's offsets until one is usable (at most
// 2^16, each a binary search of the reservations).
func (p *Pool) FirstUsable(i uint64) (uint64, bool) {
	prefixes, ok := p.Block(i)
	if !ok {
		return 0, false
	}
	for off := uint64(0); off < p.BlockSize(); off++ {
		if !p.OffsetExcluded(prefixes, off) {
			return off, true
		}
	}
	return 0, false
}

// BlockExcluded reports whether no address of block i may be handed out (every offset
// is excluded): nodes do not take such a block.
func (p *Pool) BlockExcluded(i uint64) bool {
	if !p.HasExclusions() {
		return false
	}
	_, ok := p.FirstUsable(i)
	return !ok
}

// reserve folds AddressesReserved: the pool exists, every range is well formed, inside
// the pool and overlaps no reservation (nor another range of the event).
func (c *Cluster) reserve(e *events.Event, p *events.AddressesReserved) error {
	return c.editReservations(e, p.Pool, p.Ranges, func(out []Reservation, r events.AddrRange) ([]Reservation, error) {
		for _, o := range out {
			if rangesOverlap(o.Range(), r) {
				return nil, invalid(e, "range %s overlaps reserved range %s", r, o.Range())
			}
		}
		return append(out, Reservation{First: r.First, Last: r.Last, Reason: p.Reason, Actor: e.Actor, Time: e.Time, AfterRelease: p.AfterRelease}), nil
	})
}

// unreserve folds AddressesUnreserved: every address of every range is reserved; the
// reservations lose those addresses (one partly covered keeps the rest, in one or two
// pieces with its reason, actor and time).
func (c *Cluster) unreserve(e *events.Event, p *events.AddressesUnreserved) error {
	return c.editReservations(e, p.Pool, p.Ranges, func(out []Reservation, r events.AddrRange) ([]Reservation, error) {
		if a, ok := firstUnreserved(out, r); ok {
			return nil, invalid(e, "address %s of range %s is not reserved", a, r)
		}
		return subtract(out, r), nil
	})
}

// editReservations folds an event that changes pool name's reservations: the pool
// exists, ranges is not empty, each range is well formed and inside the pool, and step
// folds it into (a copy of) the reservations, sorted by first address at the end; the
// pool's change only if every step succeeds.
func (c *Cluster) editReservations(e *events.Event, name string, ranges []events.AddrRange,
	step func([]Reservation, events.AddrRange) ([]Reservation, error)) error {
	pool, err := c.existing(e, name)
	if err != nil {
		return err
	}
	if len(ranges) == 0 {
		return invalid(e, "no range")
	}
	out := append([]Reservation(nil), pool.Reserved...)
	for _, r := range ranges {
		if cerr := pool.CheckRange(r); cerr != nil {
			return invalid(e, "%v", cerr)
		}
		if out, err = step(out, r); err != nil {
			return err
		}
	}
	sortReservations(out) // once, after every step (subtract keeps the order; reserve appends)
	if len(out) == 0 {
		out = nil
	}
	pool.Reserved = out
	return nil
}

// FirstUnreserved returns the first address of r that no reservation of the pool holds.
func (p *Pool) FirstUnreserved(r events.AddrRange) (netip.Addr, bool) {
	return firstUnreserved(p.Reserved, r)
}

func firstUnreserved(rs []Reservation, r events.AddrRange) (netip.Addr, bool) {
	at := r.First
	for _, res := range rs { // sorted and disjoint
		if res.First.Is4() != at.Is4() || res.Last.Less(at) {
			continue
		}
		if at.Less(res.First) {
			return at, true
		}
		if !res.Last.Less(r.Last) {
			return netip.Addr{}, false
		}
		at = res.Last.Next()
	}
	return at, true
}

// subtract removes r's addresses from the reservations rs (sorted, disjoint).
func subtract(rs []Reservation, r events.AddrRange) []Reservation {
	var out []Reservation
	for _, res := range rs {
		if !rangesOverlap(res.Range(), r) {
			out = append(out, res)
			continue
		}
		if res.First.Less(r.First) {
			left := res
			left.Last = r.First.Prev()
			out = append(out, left)
		}
		if r.Last.Less(res.Last) {
			right := res
			right.First = r.Last.Next()
			out = append(out, right)
		}
	}
	return out
}

func sortReservations(rs []Reservation) {
	sort.Slice(rs, func(i, j int) bool { return rs[i].First.Less(rs[j].First) })
}
