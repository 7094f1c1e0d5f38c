package allocator

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/safetext"
	"github.com/coil-net/coil/projection"
)

// Sentinel errors.
var (
	ErrInvalidPool  = errors.New("allocator: invalid pool")
	ErrPoolExists   = errors.New("allocator: pool already exists")
	ErrPoolNotFound = errors.New("allocator: pool not found")
	ErrOverlap      = errors.New("allocator: subnet overlaps")
	ErrPoolInUse    = errors.New("allocator: pool in use")
	ErrExhausted    = errors.New("allocator: pool exhausted")
	ErrRetries      = errors.New("allocator: too many conflicting retries")
	ErrNotRunning   = errors.New("allocator: node allocator is not running")
	ErrNodeAlive    = errors.New("allocator: node is still alive")
	ErrNotHeld      = errors.New("allocator: address not held")
	ErrPoolSplit    = errors.New("allocator: pool already has block streams")
)

// DefaultBlockSizeBits is the default block size: 2^5 = 32 addresses (a /27 in IPv4).
const DefaultBlockSizeBits = 5

// MaxBlockSizeBits bounds a block to 65,536 addresses.
const MaxBlockSizeBits = 16

// ParseSubnet parses one SUBNET argument: an IPv4 or IPv6 network, or a dual-stack pair
// "IPV4NET,IPV6NET".
func ParseSubnet(s string) (events.Subnet, error) {
	var out events.Subnet
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return out, errors.Wrapf(ErrInvalidPool, "subnet %s: want NET or IPV4NET,IPV6NET", safetext.Quote(s))
	}
	for _, part := range parts {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return out, errors.Wrapf(ErrInvalidPool, "subnet %s is not a CIDR (like 10.1.0.0/16 or fd00:1::/112)", safetext.Quote(part))
		}
		if p.Addr().Is4In6() {
			return out, errors.Wrapf(ErrInvalidPool, "subnet %s: IPv4-mapped IPv6 is not allowed; write the IPv4 network", safetext.Quote(part))
		}
		if p.Addr().Zone() != "" {
			return out, errors.Wrapf(ErrInvalidPool, "subnet %s: zones are not allowed", safetext.Quote(part))
		}
		if p.Masked() != p {
			return out, errors.Wrapf(ErrInvalidPool, "subnet %s has host bits set: did you mean %s?", safetext.Quote(part), p.Masked())
		}
		if p.Addr().Is4() {
			if out.IPv4.IsValid() {
				return out, errors.Wrapf(ErrInvalidPool, "subnet %s: two IPv4 networks in one pair", safetext.Quote(s))
			}
			out.IPv4 = p
		} else {
			if out.IPv6.IsValid() {
				return out, errors.Wrapf(ErrInvalidPool, "subnet %s: two IPv6 networks in one pair", safetext.Quote(s))
			}
			out.IPv6 = p
		}
	}
	return out, nil
}

func family(s events.Subnet) string {
	switch {
	case s.IPv4.IsValid() && s.IPv6.IsValid():
		return "dual-stack"
	case s.IPv4.IsValid():
		return "IPv4"
	}
	return "IPv6"
}

func subnetString(s events.Subnet) string {
	switch family(s) {
	case "dual-stack":
		return s.IPv4.String() + "," + s.IPv6.String()
	case "IPv4":
		return s.IPv4.String()
	}
	return s.IPv6.String()
}

// validateSubnet checks one subnet against the block size.
func validateSubnet(s events.Subnet, bits uint8) error {
	for _, p := range []netip.Prefix{s.IPv4, s.IPv6} {
		if !p.IsValid() {
			continue
		}
		fam := "IPv4"
		if p.Addr().Is6() {
			fam = "IPv6"
		}
		host := p.Addr().BitLen() - p.Bits()
		hi := min(host, MaxBlockSizeBits)
		if int(bits) > hi {
			return errors.Wrapf(ErrInvalidPool, "block size %d bits is out of range for %s subnet %s: must be between 0 and %d", bits, fam, p, hi)
		}
	}
	n := projection.SubnetBlocks(s, bits)
	if s.IPv4.IsValid() && s.IPv6.IsValid() {
		v6 := projection.SubnetBlocks(events.Subnet{IPv6: s.IPv6}, bits)
		if v6 < n {
			return errors.Wrapf(ErrInvalidPool, "dual-stack subnet %s: the IPv6 network holds %d blocks, fewer than the IPv4 network's %d", subnetString(s), v6, n)
		}
	}
	return nil
}

// ValidatePool checks a pool definition against the existing pools: name, subnets,
// block size, the same kind of subnet throughout, no reserved range (projection.CheckUsable:
// loopback, link-local with the pods' gateways, multicast, unspecified, broadcast,
// IPv4-mapped; an error that is both ErrInvalidPool and projection.ErrReservedRange), and
// no overlap with any subnet of any pool (its own included). New definitions only: the
// log's fold accepts pools defined before a rule existed, so old logs still replay.
func ValidatePool(p *events.PoolCreated, existing map[string]*projection.Pool) error {
	if err := events.ValidName(p.Name); err != nil {
		return errors.Wrapf(ErrInvalidPool, "pool %s", err)
	}
	if _, ok := existing[p.Name]; ok {
		return errors.Wrapf(ErrPoolExists, "pool %q", p.Name)
	}
	if len(p.Subnets) == 0 {
		return errors.Wrapf(ErrInvalidPool, "pool %q: at least one subnet is required", p.Name)
	}
	var seen []events.Subnet
	for _, s := range p.Subnets {
		if err := checkSubnet(p.Name, p.Subnets[0], p.BlockSizeBits, s, seen, existing); err != nil {
			return err
		}
		seen = append(seen, s)
	}
	return nil
}

func checkSubnet(pool string, first events.Subnet, bits uint8, s events.Subnet, same []events.Subnet, existing map[string]*projection.Pool) error {
	if !s.IPv4.IsValid() && !s.IPv6.IsValid() {
		return errors.Wrapf(ErrInvalidPool, "pool %q: empty subnet", pool)
	}
	if family(s) != family(first) {
		return errors.Wrapf(ErrInvalidPool, "pool %q: subnet %s is %s but the pool is %s; a pool's subnets are all of one kind",
			pool, subnetString(s), family(s), family(first))
	}
	for _, p := range []netip.Prefix{s.IPv4, s.IPv6} {
		if err := projection.CheckUsable(p); err != nil {
			return errors.Mark(errors.Wrapf(err, "pool %q", pool), ErrInvalidPool)
		}
	}
	if err := validateSubnet(s, bits); err != nil {
		return errors.Wrapf(err, "pool %q", pool)
	}
	total := projection.SubnetBlocks(s, bits)
	for _, o := range same {
		total += projection.SubnetBlocks(o, bits) // at most 2^63 before, plus 2^58: no overflow
		if total > projection.MaxBlocksPerPool {
			return errors.Wrapf(ErrInvalidPool, "pool %q: subnet %s would take the pool past %d blocks (2^63; Coil numbers up to 2^%d blocks of each subnet): use another pool",
				pool, subnetString(s), uint64(projection.MaxBlocksPerPool), projection.MaxBlockIndexBits)
		}
	}
	for _, o := range same {
		if overlaps(s, o) {
			return errors.Wrapf(ErrOverlap, "pool %q: subnet %s overlaps its own subnet %s", pool, subnetString(s), subnetString(o))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(existing)) {
		for _, o := range existing[name].Subnets {
			if overlaps(s, o) {
				return errors.Wrapf(ErrOverlap, "pool %q: subnet %s overlaps subnet %s of pool %q", pool, subnetString(s), subnetString(o), name)
			}
		}
	}
	return nil
}

func overlaps(a, b events.Subnet) bool {
	return projection.Overlaps(a.IPv4, b.IPv4) || projection.Overlaps(a.IPv6, b.IPv6)
}

// Admin performs operator actions on the log: pool definitions and node reclaim.
type Admin struct {
	Log   events.Log
	Clock events.Clock
	Actor string // who acts, e.g. "coilctl:alice"; recorded in the events
	// Live lists the live coilds and their feature levels (RaiseLevel, RequireLevel); nil:
	// Log's own LiveNodes when it has one (*events.EtcdLog), else no live coild.
	Live LiveNodes

	level levelSeen // the highest cluster feature level read (RequireLevel)
}

// change is what a cluster change appends: its events' payloads and what it is guarded on.
type change struct {
	payloads    []events.Payload
	guards      []events.Guard
	rangeGuards []events.RangeGuard
}

func (a *Admin) event(p events.Payload) *events.Event {
	return &events.Event{Time: a.Clock.Now(), Actor: a.Actor, Payload: p}
}

// Cluster reads the cluster stream.
func (a *Admin) Cluster(ctx context.Context) (*projection.Cluster, error) {
	c := projection.NewCluster()
	_, err := events.ReadFrom(ctx, a.Log, events.ClusterStream, 0, c.Apply)
	if err != nil {
		return c, errors.Wrap(err, "read cluster stream")
	}
	a.level.saw(c.Level)
	return c, nil
}

// nodeState reads node stream s.
func (a *Admin) nodeState(ctx context.Context, s events.Stream) (*projection.Node, error) {
	st := projection.NewNode()
	if _, err := events.ReadFrom(ctx, a.Log, s, 0, st.Apply); err != nil {
		return nil, errors.Wrapf(err, "read %s", s)
	}
	return st, nil
}

// poolBlocks reads pool stream s.
func (a *Admin) poolBlocks(ctx context.Context, s events.Stream) (*projection.Blocks, error) {
	b := projection.NewBlocks()
	if _, err := events.ReadFrom(ctx, a.Log, s, 0, b.Apply); err != nil {
		return nil, errors.Wrapf(err, "read %s", s)
	}
	return b, nil
}

// PoolOption changes how CreatePool makes a pool.
type PoolOption func(*poolOptions)

type poolOptions struct {
	// split: PoolSplit in the same append; splitIfLevel: only when the cluster is at
	// feature level 1 or can be raised to it.
	split, splitIfLevel bool
	// skipNB: PoolNetworkBroadcastSet{Skip: true} in the same append; skipNBIfLevel: only
	// when the cluster is at feature level 1 or can be raised to it.
	skipNB, skipNBIfLevel bool
	reserve               []events.AddrRange
	reason                string
	selector              string // canonical node selector ("" = every node)
}

// SkipNetworkBroadcast makes the pool skip the network and broadcast address of each of
// its IPv4 subnets (PoolNetworkBroadcastSet in the same append; cluster feature level 1).
// Without it (or with false) the pool hands them out, as pools did before the option.
func SkipNetworkBroadcast(skip bool) PoolOption {
	return func(o *poolOptions) { o.skipNB, o.skipNBIfLevel = skip, false }
}

// SkipNetworkBroadcastIfLevel is SkipNetworkBroadcast(true) when the cluster is at
// feature level 1 or can be raised to it, else nothing (a coild of an older release
// runs): coilctl's default. Read the pool to see which it was.
func SkipNetworkBroadcastIfLevel() PoolOption {
	return func(o *poolOptions) { o.skipNB, o.skipNBIfLevel = false, true }
}

// ReserveRanges reserves ranges of the new pool from the start (AddressesReserved in the
// same append; cluster feature level 1), with reason.
func ReserveRanges(ranges []events.AddrRange, reason string) PoolOption {
	return func(o *poolOptions) { o.reserve, o.reason = append(o.reserve, ranges...), reason }
}

// WithNodeSelector gives the new pool a node selector (canonical form, from
// ParseNodeSelector): PoolNodeSelectorSet in the same append as PoolCreated. Only nodes
// whose labels match it take its blocks. It needs cluster feature level 1.
func WithNodeSelector(selector string) PoolOption {
	return func(o *poolOptions) { o.selector = selector }
}

// BlockStreams makes the pool record each block's owners in a stream of its own,
// "block/NAME/INDEX" (PoolSplit in the same append as PoolCreated): nodes taking blocks
// then race only for the block they pick, not for one pool-wide head. It needs cluster
// feature level 1 (a coild of an older release stops at PoolSplit): CreatePool raises
// it when every live coild reads it and fails with ErrLevel otherwise. Without this or
// BlockStreamsIfLevel, CreatePool makes a pool-stream pool (docs/design.md, "Block
// streams").
func BlockStreams() PoolOption { return func(o *poolOptions) { o.split, o.splitIfLevel = true, false } }

// BlockStreamsIfLevel is BlockStreams when the cluster is at feature level 1 or can be
// raised to it, else nothing (a coild of an older release runs; the pool keeps the
// pool-stream layout and can be split later): coilctl's default. Read the pool to see
// which it was.
func BlockStreamsIfLevel() PoolOption {
	return func(o *poolOptions) { o.split, o.splitIfLevel = false, true }
}

// LegacyLayout makes the pool keep every block's ownership in its one pool stream,
// "pool/NAME", as pools made before block streams do (see SplitPool). It is
// CreatePool's default without options (coilctl's default is BlockStreamsIfLevel).
// Nodes then race for that one stream's head, which does not scale past a few hundred
// nodes.
func LegacyLayout() PoolOption {
	return func(o *poolOptions) { o.split, o.splitIfLevel = false, false }
}

// levelOption settles a pool option that needs cluster feature level 1: asked for (*on),
// the level is required (raised if every live coild reads it, else ErrLevel); asked for
// only if the level allows (ifLevel), *on becomes whether it does, and only other
// errors are returned.
func (a *Admin) levelOption(ctx context.Context, feature string, on *bool, ifLevel bool) error {
	if !*on && !ifLevel {
		return nil
	}
	err := a.RequireLevel(ctx, events.Level1, feature)
	if ifLevel && errors.Is(err, ErrLevel) {
		return nil
	}
	*on = err == nil
	return err
}

// CreatePool validates the pool against all others and appends PoolCreated, followed in
// the same append by PoolSplit (the pool's blocks get a stream each) if BlockStreams is
// given. It retries when another definition raced it, re-validating each time.
func (a *Admin) CreatePool(ctx context.Context, p *events.PoolCreated, opts ...PoolOption) error {
	var o poolOptions
	for _, f := range opts {
		f(&o)
	}
	if err := a.levelOption(ctx, "a pool with block streams", &o.split, o.splitIfLevel); err != nil {
		return err
	}
	if len(o.reserve) > 0 {
		if err := a.RequireLevel(ctx, events.Level1, "address reservations"); err != nil {
			return err
		}
	}
	hasV4 := len(p.Subnets) > 0 && p.Subnets[0].IPv4.IsValid()
	if !hasV4 {
		o.skipNB, o.skipNBIfLevel = false, false // nothing to skip in IPv6
	}
	if err := a.levelOption(ctx, "the network/broadcast option", &o.skipNB, o.skipNBIfLevel); err != nil {
		return err
	}
	if o.selector != "" {
		if err := a.RequireLevel(ctx, events.Level1, "a pool with a node selector"); err != nil {
			return err
		}
	}
	if err := a.requireWideIndexes(ctx, p.Name, p.BlockSizeBits, p.Subnets...); err != nil {
		return err
	}
	return a.clusterChange(ctx, func(c *projection.Cluster) (change, error) {
		if err := ValidatePool(p, c.Pools); err != nil {
			return change{}, err
		}
		payloads := []events.Payload{p}
		if o.split {
			payloads = append(payloads, &events.PoolSplit{Name: p.Name})
		}
		if o.skipNB {
			payloads = append(payloads, &events.PoolNetworkBroadcastSet{Pool: p.Name, Skip: true})
		}
		if len(o.reserve) > 0 {
			np := &projection.Pool{Name: p.Name, BlockSizeBits: p.BlockSizeBits, Subnets: p.Subnets}
			if err := CheckRanges(np, o.reserve); err != nil {
				return change{}, errors.Wrapf(err, "pool %q", p.Name)
			}
			payloads = append(payloads, &events.AddressesReserved{Pool: p.Name, Ranges: o.reserve, Reason: o.reason})
		}
		if o.selector != "" {
			payloads = append(payloads, &events.PoolNodeSelectorSet{Name: p.Name, Selector: o.selector})
		}
		return change{payloads: payloads}, nil
	})
}

// SplitPool moves a pool to block streams (PoolSplit): from then on its blocks are
// taken in streams of their own, block/NAME/INDEX. Blocks owned in pool/NAME stay
// recorded there until their owner releases them (or they are reclaimed). Every coild
// must run a version that knows block streams first: an older one stops at the unknown
// event (docs/design.md, "Block streams"), so the split needs cluster feature level 1
// (RequireLevel raises it when every live coild reads it, else ErrLevel). Splitting a
// split pool is ErrPoolSplit.
func (a *Admin) SplitPool(ctx context.Context, pool string) error {
	if err := a.RequireLevel(ctx, events.Level1, "block streams (pool split)"); err != nil {
		return err
	}
	return a.clusterChange(ctx, func(c *projection.Cluster) (change, error) {
		p, ok := c.Pools[pool]
		if !ok {
			return change{}, errors.Wrapf(ErrPoolNotFound, "%q", pool)
		}
		if p.Split {
			return change{}, errors.Wrapf(ErrPoolSplit, "pool %q", pool)
		}
		return change{payloads: []events.Payload{&events.PoolSplit{Name: pool}}}, nil
	})
}

// requireWideIndexes is the level gate of large pools: a subnet of more than
// projection.LegacyMaxBlocksPerSubnet blocks (an IPv6 /64 or /48 with small blocks) has
// block indexes that releases before feature level 1 cannot hold (they read 32-bit
// indexes and scan pools from their first block), so such a pool needs level 1. Small
// subnets need nothing. Checked before validation: a subnet the validation refuses
// anyway may raise the level first (raising is harmless, and only when every coild
// reads level 1).
func (a *Admin) requireWideIndexes(ctx context.Context, pool string, bits uint8, subnets ...events.Subnet) error {
	for _, s := range subnets {
		if projection.SubnetBlocks(s, bits) > projection.LegacyMaxBlocksPerSubnet {
			return a.RequireLevel(ctx, events.Level1, fmt.Sprintf("pool %q: subnet %s of more than 2^24 blocks", pool, subnetString(s)))
		}
	}
	return nil
}

// AddSubnet appends a subnet to a pool; its blocks get the next indexes.
func (a *Admin) AddSubnet(ctx context.Context, pool string, s events.Subnet) error {
	if c, err := a.Cluster(ctx); err != nil {
		return err
	} else if p, ok := c.Pools[pool]; ok {
		if err := a.requireWideIndexes(ctx, pool, p.BlockSizeBits, s); err != nil {
			return err
		}
	}
	return a.clusterChange(ctx, func(c *projection.Cluster) (change, error) {
		p, ok := c.Pools[pool]
		if !ok {
			return change{}, errors.Wrapf(ErrPoolNotFound, "%q", pool)
		}
		if projection.SubnetBlocks(s, p.BlockSizeBits) > projection.LegacyMaxBlocksPerSubnet && c.Level < events.Level1 {
			// The pool was deleted and made again with smaller blocks since the gate.
			return change{}, errors.Wrapf(ErrLevel, "pool %q: subnet %s of more than 2^24 blocks needs cluster feature level 1; the cluster is at %d", pool, subnetString(s), c.Level)
		}
		others := make(map[string]*projection.Pool, len(c.Pools))
		for k, v := range c.Pools {
			if k != pool {
				others[k] = v
			}
		}
		if err := checkSubnet(pool, p.Subnets[0], p.BlockSizeBits, s, p.Subnets, others); err != nil {
			return change{}, err
		}
		return change{payloads: []events.Payload{&events.PoolSubnetAdded{Name: pool, Subnet: s}}}, nil
	})
}

// DeletePool appends PoolDeleted, refused while any block of the pool is owned. The
// append is guarded on the pool's block stream and, for a split pool, on every one of
// its block streams as read (a range guard), so a block assigned meanwhile aborts it.
func (a *Admin) DeletePool(ctx context.Context, pool string) error {
	return a.clusterChange(ctx, func(c *projection.Cluster) (change, error) {
		return a.decideDelete(ctx, c, pool)
	})
}

// CheckDeletePool says whether DeletePool would be refused now (ErrPoolNotFound,
// ErrPoolInUse, with DeletePool's messages) without writing anything, and returns the
// pool: coilctl asks for confirmation only for a deletion that can happen. DeletePool
// checks again.
func (a *Admin) CheckDeletePool(ctx context.Context, pool string) (*projection.Pool, error) {
	c, err := a.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	if _, err = a.decideDelete(ctx, c, pool); err != nil {
		return nil, err
	}
	return c.Pools[pool], nil
}

// decideDelete reads the pool's pool stream and block streams at one revision and builds
// the deletion, guarded on the pool stream's head and on every block stream (range guard).
func (a *Admin) decideDelete(ctx context.Context, c *projection.Cluster, pool string) (change, error) {
	if _, ok := c.Pools[pool]; !ok {
		return change{}, errors.Wrapf(ErrPoolNotFound, "%q", pool)
	}
	st, rev, err := ReadPool(ctx, a.Log, pool)
	if err != nil {
		return change{}, err
	}
	if owners := st.PoolOwners(pool); len(owners) > 0 {
		nodes := map[string]int{}
		for _, o := range owners {
			nodes[o.Node]++
		}
		var parts []string
		for _, nd := range slices.Sorted(maps.Keys(nodes)) {
			parts = append(parts, fmt.Sprintf("%s: %d", nd, nodes[nd]))
		}
		return change{}, errors.Wrapf(ErrPoolInUse, "pool %q: %d blocks are in use (%s); delete its pods first (nodes give a block back once it is empty: after their --block-grace, at once when the pool is disabled with coilctl pool disable)",
			pool, len(owners), strings.Join(parts, ", "))
	}
	stream := events.PoolStream(pool)
	return change{
		payloads:    []events.Payload{&events.PoolDeleted{Name: pool}},
		guards:      []events.Guard{{Stream: stream, Version: st.Head(stream)}},
		rangeGuards: []events.RangeGuard{{Prefix: BlockStreamsPrefix(pool), Rev: rev}},
	}, nil
}

// BlockStreamsPrefix is the stream-name prefix of a pool's block streams.
func BlockStreamsPrefix(pool string) string { return "block/" + pool + "/" }

// ReadPool reads a pool's block ownership, its pool stream and every block stream, at
// one revision, which it returns.
func ReadPool(ctx context.Context, log events.Log, pool string) (*projection.State, int64, error) {
	st := projection.NewState()
	rev, err := log.ReadPrefix(ctx, BlockStreamsPrefix(pool), 0, st.Apply)
	if err != nil {
		return nil, 0, errors.Wrapf(err, "read the block streams of pool %q", pool)
	}
	if err := readStreams(ctx, log, []events.Stream{events.PoolStream(pool)}, rev, st); err != nil {
		return nil, 0, err
	}
	return st, rev, nil
}

// clusterChange reads the cluster stream, lets decide build events, and appends them;
// on a conflict it reads again and decides again.
func (a *Admin) clusterChange(ctx context.Context, decide func(*projection.Cluster) (change, error)) error {
	var b backoff
	for {
		c, err := a.Cluster(ctx)
		if err != nil {
			return err
		}
		ch, err := decide(c)
		if err != nil {
			return err
		}
		if len(ch.payloads) == 0 {
			return nil // nothing to change
		}
		evs := make([]*events.Event, len(ch.payloads))
		for i, p := range ch.payloads {
			// A safety net under RequireLevel: no event type is written below its level.
			if need := events.MinLevel(p.EventType()); need > c.Level {
				return errors.Wrapf(ErrLevel, "%s needs cluster feature level %d; the cluster is at %d", p.EventType(), need, c.Level)
			}
			evs[i] = a.event(p)
		}
		_, err = a.Log.Append(ctx, events.AppendRequest{
			Stream:      events.ClusterStream,
			Expected:    c.Head(),
			Events:      evs,
			Guards:      ch.guards,
			RangeGuards: ch.rangeGuards,
		})
		if !errors.Is(err, events.ErrConflict) {
			return errors.Wrapf(err, "append %s", ch.payloads[0].EventType())
		}
		if err := b.wait(ctx); err != nil {
			return err
		}
	}
}
