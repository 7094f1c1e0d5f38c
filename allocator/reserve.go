package allocator

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/safetext"
	"github.com/coil-net/coil/projection"
)

// Sentinel errors of reservations.
var (
	// ErrInvalidRange: a RANGE that does not parse, lies outside the pool, or overlaps
	// another range of the same request.
	ErrInvalidRange = errors.New("allocator: invalid range")
	// ErrAddressInUse: a range to reserve holds addresses pods hold (see AfterRelease).
	ErrAddressInUse = errors.New("allocator: address in use")
	// ErrReservation: a range to reserve overlaps a reservation, or a range to unreserve
	// holds an address that is not reserved.
	ErrReservation = errors.New("allocator: reservation conflict")
)

// ParseRange parses a RANGE argument: one address ("10.1.0.5"), a CIDR prefix
// ("10.1.2.0/24", host bits must be zero) or FIRST-LAST ("10.1.0.10-10.1.0.20").
func ParseRange(s string) (events.AddrRange, error) {
	bad := func(why string) (events.AddrRange, error) {
		return events.AddrRange{}, errors.Wrapf(ErrInvalidRange, "range %s: %s", safetext.Quote(s), why)
	}
	addr := func(x string) (netip.Addr, error) {
		a, err := netip.ParseAddr(strings.TrimSpace(x))
		switch {
		case err != nil:
			return a, errors.Newf("%s is not an IP address", safetext.Quote(x))
		case a.Zone() != "":
			return a, errors.Newf("%s: zones are not allowed", safetext.Quote(x))
		case a.Is4In6():
			return a, errors.Newf("%s is IPv4-mapped IPv6: write the IPv4 address", safetext.Quote(x))
		}
		return a, nil
	}
	switch {
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return bad("not a CIDR prefix (like 10.1.2.0/24)")
		}
		if p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return bad("write an IPv4 prefix as IPv4, without a zone")
		}
		if p.Masked() != p {
			return bad("host bits set: did you mean " + p.Masked().String() + "?")
		}
		return events.AddrRange{First: p.Addr(), Last: lastOf(p)}, nil
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		first, err := addr(a)
		if err != nil {
			return bad(err.Error())
		}
		last, err := addr(b)
		if err != nil {
			return bad(err.Error())
		}
		if first.Is4() != last.Is4() {
			return bad("mixes IPv4 and IPv6")
		}
		if last.Less(first) {
			return bad("ends before it starts")
		}
		return events.AddrRange{First: first, Last: last}, nil
	}
	a, err := addr(s)
	if err != nil {
		return bad(err.Error() + " (want ADDRESS, PREFIX/LEN or FIRST-LAST)")
	}
	return events.AddrRange{First: a, Last: a}, nil
}

// lastOf is the last address of a prefix.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := p.Addr().BitLen() - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// CheckRanges checks ranges to reserve against the pool: each inside it, none
// overlapping another of them or a reservation.
func CheckRanges(p *projection.Pool, ranges []events.AddrRange) error {
	if len(ranges) == 0 {
		return errors.Wrap(ErrInvalidRange, "no range given")
	}
	for i, r := range ranges {
		if err := p.CheckRange(r); err != nil {
			return errors.Wrapf(ErrInvalidRange, "%v", err)
		}
		for _, o := range ranges[:i] {
			if o.First.Is4() == r.First.Is4() && !o.Last.Less(r.First) && !r.Last.Less(o.First) {
				return errors.Wrapf(ErrInvalidRange, "ranges %s and %s overlap", o, r)
			}
		}
		if res, ok := p.ReservationOverlapping(r); ok {
			return errors.Wrapf(ErrReservation, "range %s overlaps %s, reserved by %s at %s%s: unreserve it first",
				r, res.Range(), res.Actor, res.Time.UTC().Format("2006-01-02T15:04:05Z"), because(res.Reason))
		}
	}
	return nil
}

func because(reason string) string {
	if reason == "" {
		return ""
	}
	return " (" + safetext.Quote(reason) + ")"
}

// Holder is an attachment holding an address of a range to reserve.
type Holder struct {
	Addr netip.Addr // the held address inside the range
	Node string
	projection.AttachKey
	projection.Assignment
}

// String names the holder: "10.1.0.5 (pod default/web-0 on node n1)".
func (h Holder) String() string {
	who := "container " + h.ContainerID + "/" + h.IfName
	if h.PodName != "" {
		who = "pod " + h.PodNamespace + "/" + h.PodName
	}
	return h.Addr.String() + " (" + who + " on node " + h.Node + ")"
}

// ReserveRequest asks to reserve ranges of a pool.
type ReserveRequest struct {
	Pool   string
	Ranges []events.AddrRange
	Reason string
	// AfterRelease reserves addresses pods hold too: they keep them, and each becomes
	// reserved as its holder releases it. Without it such a range is refused
	// (ErrAddressInUse, naming the holders).
	AfterRelease bool
}

// Reserve appends AddressesReserved (cluster feature level 1). The ranges must lie in the
// pool and overlap neither each other nor a reservation (ErrInvalidRange). The addresses
// held in them are read from the node streams of the blocks' owners at one revision, and
// the append is guarded on those streams, on the pool stream and on the pool's block
// streams: an address handed out meanwhile aborts it, and it is decided again. (Nodes in
// turn guard their appends on the cluster stream, so none hands out an address reserved
// after it decided.) It returns the holders (only with AfterRelease: their addresses
// become reserved when released).
func (a *Admin) Reserve(ctx context.Context, req ReserveRequest) ([]Holder, error) {
	// Bad input is refused before the level is raised: a refused command changes nothing.
	if err := a.precheck(ctx, func(c *projection.Cluster) error {
		p, ok := c.Pools[req.Pool]
		if !ok {
			return errors.Wrapf(ErrPoolNotFound, "%q", req.Pool)
		}
		return errors.Wrapf(CheckRanges(p, req.Ranges), "pool %q", req.Pool)
	}); err != nil {
		return nil, err
	}
	if err := a.RequireLevel(ctx, events.Level1, "address reservations"); err != nil {
		return nil, err
	}
	var held []Holder
	err := a.clusterChange(ctx, func(c *projection.Cluster) (change, error) {
		p, ok := c.Pools[req.Pool]
		if !ok {
			return change{}, errors.Wrapf(ErrPoolNotFound, "%q", req.Pool)
		}
		if err := CheckRanges(p, req.Ranges); err != nil {
			return change{}, errors.Wrapf(err, "pool %q", req.Pool)
		}
		var guards []events.Guard
		var rangeGuards []events.RangeGuard
		var err error
		held, guards, rangeGuards, err = a.holders(ctx, p, req.Ranges)
		if err != nil {
			return change{}, err
		}
		if len(held) > 0 && !req.AfterRelease {
			var names []string
			for i, h := range held {
				if i == 5 {
					names = append(names, "...")
					break
				}
				names = append(names, h.String())
			}
			return change{}, errors.Wrapf(ErrAddressInUse, "pool %q: %d addresses of the ranges are in use: %s; release them first, or reserve with --after-release (each becomes reserved when its pod releases it)",
				req.Pool, len(held), strings.Join(names, ", "))
		}
		return change{
			payloads:    []events.Payload{&events.AddressesReserved{Pool: req.Pool, Ranges: req.Ranges, Reason: req.Reason, AfterRelease: req.AfterRelease && len(held) > 0}},
			guards:      guards,
			rangeGuards: rangeGuards,
		}, nil
	})
	if err != nil {
		return nil, err
	}
	return held, nil
}

// holders reads who holds addresses of ranges in pool p: the owners of the blocks that
// overlap the ranges (pool stream and block streams) and their node streams, at one
// revision. It returns them sorted by address, with the guards that pin what was read.
func (a *Admin) holders(ctx context.Context, p *projection.Pool, ranges []events.AddrRange) ([]Holder, []events.Guard, []events.RangeGuard, error) {
	st, rev, err := ReadPool(ctx, a.Log, p.Name)
	if err != nil {
		return nil, nil, nil, err
	}
	in := func(x netip.Addr) bool {
		for _, r := range ranges {
			if r.First.Is4() == x.Is4() && !x.Less(r.First) && !r.Last.Less(x) {
				return true
			}
		}
		return false
	}
	nodes := map[string]bool{}
	for idx, o := range st.PoolOwners(p.Name) {
		prefixes, _ := p.Block(idx)
		for _, pf := range prefixes {
			for _, r := range ranges {
				if r.First.Is4() == pf.Addr().Is4() && !lastOf(pf).Less(r.First) && !r.Last.Less(pf.Addr()) {
					nodes[o.Node] = true
				}
			}
		}
	}
	// A fixed address (a claim, fixed.go) is held by the claiming node, which need not own
	// its block: its node stream holds the attachment too.
	if b := st.Pools[p.Name]; b != nil {
		for x, c := range b.Claims {
			if in(x) {
				nodes[c.Node] = true
			}
		}
	}
	var streams []events.Stream
	for _, nd := range slices.Sorted(maps.Keys(nodes)) {
		streams = append(streams, events.NodeStream(nd))
	}
	if err := readStreams(ctx, a.Log, streams, rev, st); err != nil {
		return nil, nil, nil, errors.Wrap(err, "read the node streams of the blocks' owners")
	}
	var out []Holder
	guards := []events.Guard{{Stream: events.PoolStream(p.Name), Version: st.Head(events.PoolStream(p.Name))}}
	for _, nd := range slices.Sorted(maps.Keys(nodes)) {
		s := events.NodeStream(nd)
		guards = append(guards, events.Guard{Stream: s, Version: st.Head(s)})
		n := st.Nodes[nd]
		if n == nil {
			continue
		}
		for key, asg := range n.Attached {
			if asg.Pool != p.Name {
				continue
			}
			for _, x := range asg.Addrs {
				if in(x) {
					out = append(out, Holder{Addr: x, Node: nd, AttachKey: key, Assignment: *asg})
					break
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out, guards, []events.RangeGuard{{Prefix: BlockStreamsPrefix(p.Name), Rev: rev}}, nil
}

// Unreserve appends AddressesUnreserved: every address of every range must be reserved
// (ErrInvalidRange names the first that is not); reservations partly covered keep the
// rest. It needs no holder check: it only allows more.
func (a *Admin) Unreserve(ctx context.Context, pool string, ranges []events.AddrRange, reason string) error {
	// No level to raise: below level 1 nothing is reserved, and the check refuses.
	return a.clusterChange(ctx, func(c *projection.Cluster) (change, error) {
		p, ok := c.Pools[pool]
		if !ok {
			return change{}, errors.Wrapf(ErrPoolNotFound, "%q", pool)
		}
		if len(ranges) == 0 {
			return change{}, errors.Wrap(ErrInvalidRange, "no range given")
		}
		for i, r := range ranges {
			if err := p.CheckRange(r); err != nil {
				return change{}, errors.Wrapf(ErrInvalidRange, "pool %q: %v", pool, err)
			}
			for _, o := range ranges[:i] {
				if o.First.Is4() == r.First.Is4() && !o.Last.Less(r.First) && !r.Last.Less(o.First) {
					return change{}, errors.Wrapf(ErrInvalidRange, "pool %q: ranges %s and %s overlap", pool, o, r)
				}
			}
			if x, ok := p.FirstUnreserved(r); ok {
				return change{}, errors.Wrapf(ErrReservation, "pool %q: address %s of range %s is not reserved (see coilctl pool show %s)", pool, x, r, pool)
			}
		}
		return change{payloads: []events.Payload{&events.AddressesUnreserved{Pool: pool, Ranges: ranges, Reason: reason}}}, nil
	})
}

// SetNetworkBroadcast appends PoolNetworkBroadcastSet (cluster feature level 1): whether
// the pool skips the network and broadcast addresses of its IPv4 subnets. Addresses pods
// hold stay theirs. It reports false, writing nothing, when the pool already does so.
func (a *Admin) SetNetworkBroadcast(ctx context.Context, pool string, skip bool) (bool, error) {
	err := a.precheck(ctx, func(c *projection.Cluster) error {
		p, ok := c.Pools[pool]
		switch {
		case !ok:
			return errors.Wrapf(ErrPoolNotFound, "%q", pool)
		case p.SkipNetworkBroadcast == skip:
			return errNoChange
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err = a.RequireLevel(ctx, events.Level1, "the network/broadcast option"); err != nil {
		return false, err
	}
	changed := false
	err = a.clusterChange(ctx, func(c *projection.Cluster) (change, error) {
		p, ok := c.Pools[pool]
		if !ok {
			return change{}, errors.Wrapf(ErrPoolNotFound, "%q", pool)
		}
		if p.SkipNetworkBroadcast == skip {
			return change{}, errNoChange
		}
		changed = true
		return change{payloads: []events.Payload{&events.PoolNetworkBroadcastSet{Pool: pool, Skip: skip}}}, nil
	})
	if errors.Is(err, errNoChange) {
		return false, nil
	}
	return changed, err
}

// errNoChange: a decision that writes nothing.
var errNoChange = errors.New("allocator: no change")

// precheck reads the cluster stream and checks a request against it before anything is
// written (the decision is checked again when it is appended).
func (a *Admin) precheck(ctx context.Context, check func(*projection.Cluster) error) error {
	c, err := a.Cluster(ctx)
	if err != nil {
		return err
	}
	return check(c)
}
