package projection

import (
	"crypto/sha256"
	"encoding/json"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// Sentinel errors.
var (
	// ErrInvalidEvent: an event that contradicts the state it is applied to.
	ErrInvalidEvent = errors.New("projection: invalid event")
	// ErrWrongStream: an event type that does not belong in the stream it was read from.
	ErrWrongStream = errors.New("projection: event in wrong stream")
	// ErrSequence: an event out of order (a gap, or applied twice).
	ErrSequence = errors.New("projection: event out of sequence")
	// ErrSnapshotMismatch: a snapshot whose state differs from the replayed state.
	ErrSnapshotMismatch = errors.New("projection: snapshot does not match replayed state")
)

// head tracks a stream's position and checks each event follows it.
type head struct {
	Seq  uint64      `json:"seq"`
	Hash events.Hash `json:"hash"`
}

func (h *head) check(e *events.Event) error {
	if e.Schema > events.SchemaVersion {
		return errors.Wrapf(events.ErrFutureSchema, "%s #%d: schema %d, this build reads up to %d", e.Stream, e.Seq, e.Schema, events.SchemaVersion)
	}
	if _, ok := e.Payload.(*events.Snapshot); ok && h.Seq == 0 {
		return nil // a reader may start at a snapshot
	}
	if e.Seq != h.Seq+1 {
		return errors.Wrapf(ErrSequence, "%s #%d applied at head %d", e.Stream, e.Seq, h.Seq)
	}
	if h.Seq > 0 && e.Prev != h.Hash {
		return errors.Wrapf(ErrSequence, "%s #%d: previous-hash does not match #%d", e.Stream, e.Seq, h.Seq)
	}
	return nil
}

func (h *head) advance(e *events.Event) { h.Seq, h.Hash = e.Seq, e.Hash }

func invalid(e *events.Event, format string, args ...any) error {
	return errors.Wrapf(ErrInvalidEvent, "%s #%d %s: "+format, append([]any{e.Stream, e.Seq, e.Type()}, args...)...)
}

func wrongStream(e *events.Event) error {
	return errors.Wrapf(ErrWrongStream, "%s #%d: %s does not belong in this stream", e.Stream, e.Seq, e.Type())
}

func unknownType(e *events.Event) error {
	return errors.Wrapf(events.ErrUnknownType, "%s #%d: %q", e.Stream, e.Seq, e.Type())
}

// hashJSON is the state hash: SHA-256 of the canonical JSON (struct fields in declaration
// order, map keys sorted, as encoding/json writes them).
func hashJSON(v any) (events.Hash, []byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return events.Hash{}, nil, errors.Wrap(err, "projection: encode state")
	}
	return sha256.Sum256(b), b, nil
}

// snapshotApply handles a Snapshot event for any stream state s: an empty state loads it,
// a non-empty one must match it.
func snapshotApply[T any](h *head, s *T, reset func(*T), e *events.Event, p *events.Snapshot) error {
	if h.Seq == 0 {
		var loaded T
		reset(&loaded)
		if err := json.Unmarshal(p.State, &loaded); err != nil {
			return invalid(e, "snapshot state does not decode: %v", err)
		}
		// The state hashes as recorded whatever it holds, so check it is a state the
		// fold could have produced (no null maps or entries, indexes that agree): the
		// fold writes into it next.
		if err := wellFormed(&loaded); err != nil {
			return invalid(e, "snapshot state is not one the fold makes: %v", err)
		}
		got, _, err := hashJSON(&loaded)
		if err != nil {
			return err
		}
		if got != p.StateHash {
			return errors.Wrapf(ErrSnapshotMismatch, "%s #%d: snapshot state hash %s, recorded %s", e.Stream, e.Seq, got, p.StateHash)
		}
		if lh := headOf(&loaded); lh.Seq+1 != e.Seq || (lh.Seq > 0 && lh.Hash != e.Prev) {
			return errors.Wrapf(ErrSnapshotMismatch, "%s #%d: snapshot state is at #%d, not the event before it", e.Stream, e.Seq, lh.Seq)
		}
		*s = loaded
		return nil
	}
	got, _, err := hashJSON(s)
	if err != nil {
		return err
	}
	if got != p.StateHash {
		return errors.Wrapf(ErrSnapshotMismatch, "%s #%d: replayed state hash %s, snapshot says %s", e.Stream, e.Seq, got, p.StateHash)
	}
	return nil
}

// wellFormed checks a state decoded from a snapshot.
func wellFormed(s any) error {
	switch s := s.(type) {
	case *Cluster:
		if s.Pools == nil {
			return errors.New("pools is null")
		}
		for name, p := range s.Pools {
			if p == nil || p.Name != name {
				return errors.Newf("pool %q is null or named otherwise", name)
			}
		}
	case *Blocks:
		if s.Owners == nil {
			return errors.New("owners is null")
		}
		for a, c := range s.Claims {
			if c == nil || len(c.Addrs) == 0 || c.Addrs[0] != a {
				return errors.Newf("claim of %s is null or keyed otherwise", a)
			}
		}
	case *Node:
		if s.Attached == nil || s.Held == nil || s.Use == nil || s.Last == nil {
			return errors.New("attached, held, use or last is null")
		}
		held := map[netip.Addr]bool{}
		for k, a := range s.Attached {
			if a == nil || k.ContainerID == "" || k.IfName == "" || len(a.Addrs) == 0 {
				return errors.Newf("attachment %s/%s is null, unnamed or holds no address", k.ContainerID, k.IfName)
			}
			for _, addr := range a.Addrs {
				if h, ok := s.Held[addr]; !ok || h != k {
					return errors.Newf("attachment %s/%s holds %s, which held does not give it", k.ContainerID, k.IfName, addr)
				}
				held[addr] = true
			}
			if u := s.Use[BlockRef{Pool: a.Pool, Index: a.Block}]; u == nil || u.InUse <= 0 {
				return errors.Newf("attachment %s/%s is in block %s#%d, which use does not count", k.ContainerID, k.IfName, a.Pool, a.Block)
			}
		}
		if len(held) != len(s.Held) {
			return errors.Newf("held lists %d addresses, the attachments hold %d", len(s.Held), len(held))
		}
		for r, u := range s.Use {
			if u == nil || u.InUse < 0 {
				return errors.Newf("use of %s#%d is null or negative", r.Pool, r.Index)
			}
		}
	}
	return nil
}

func headOf(s any) head {
	switch s := s.(type) {
	case *Cluster:
		return s.At
	case *Blocks:
		return s.At
	case *Node:
		return s.At
	}
	return head{}
}

// Version returns a stream state's head as an events.Version.
func (h head) Version() events.Version { return events.Version{Seq: h.Seq, Hash: h.Hash} }

// ---- cluster stream ----

// Pool is a pool's definition.
type Pool struct {
	Name          string          `json:"name"`
	BlockSizeBits uint8           `json:"blockSizeBits"`
	Subnets       []events.Subnet `json:"subnets"`
	Created       time.Time       `json:"created"`
	// Split: the pool's blocks have a stream each, "block/NAME/INDEX" (PoolSplit); before
	// it (and for blocks owned in it since), "pool/NAME" records their owners.
	Split bool `json:"split,omitempty"`
	// Reserved are the pool's reserved ranges (AddressesReserved, AddressesUnreserved),
	// sorted by first address, disjoint: no pod gets an address in them.
	Reserved []Reservation `json:"reserved,omitempty"`
	// SkipNetworkBroadcast: no pod gets the first or the last address of an IPv4 subnet
	// of the pool of at most /30 (PoolNetworkBroadcastSet). False for a pool without that
	// event: it hands them out, as pools did before the option existed.
	SkipNetworkBroadcast bool `json:"skipNetworkBroadcast,omitempty"`
	// NodeSelector: only nodes whose labels match it take blocks of the pool
	// (PoolNodeSelectorSet, in canonical label-selector form); empty: every node.
	NodeSelector string `json:"nodeSelector,omitempty"`
	// Disabled: the pool hands out no new block or address (PoolDisabled, until
	// PoolEnabled); DisabledReason is the reason given.
	Disabled       bool   `json:"disabled,omitempty"`
	DisabledReason string `json:"disabledReason,omitempty"`
}

// Cluster is the state of the "cluster" stream: the pools that exist.
type Cluster struct {
	At    head             `json:"head"`
	Pools map[string]*Pool `json:"pools"`
	// Level is the cluster's feature level (ClusterLevelRaised; events.LevelBase before
	// any). Left out of the state's JSON at LevelBase, so states of logs from before
	// feature levels hash as they always did.
	Level events.Level `json:"level,omitempty"`
}

// NewCluster returns the empty cluster state.
func NewCluster() *Cluster { return &Cluster{Pools: map[string]*Pool{}} }

func resetCluster(c *Cluster) { *c = Cluster{Pools: map[string]*Pool{}} }

// Apply folds one event of the cluster stream. On error c is unchanged.
func (c *Cluster) Apply(e *events.Event) error {
	if err := c.At.check(e); err != nil {
		return err
	}
	switch p := e.Payload.(type) {
	case *events.PoolCreated:
		if _, ok := c.Pools[p.Name]; ok {
			return invalid(e, "pool %q already exists", p.Name)
		}
		c.Pools[p.Name] = &Pool{Name: p.Name, BlockSizeBits: p.BlockSizeBits, Subnets: append([]events.Subnet(nil), p.Subnets...), Created: e.Time}
	case *events.PoolSubnetAdded:
		pool, err := c.existing(e, p.Name)
		if err != nil {
			return err
		}
		pool.Subnets = append(pool.Subnets, p.Subnet)
	case *events.PoolDeleted:
		if _, err := c.existing(e, p.Name); err != nil {
			return err
		}
		delete(c.Pools, p.Name)
	case *events.ClusterLevelRaised:
		if p.Level <= c.Level {
			return invalid(e, "level %d is not above the cluster's level %d (levels only go up)", p.Level, c.Level)
		}
		if p.Level > events.CurrentLevel {
			return errors.Wrapf(events.ErrFutureLevel, "%s #%d: the cluster is at feature level %d, this build of coil supports up to %d: upgrade it",
				e.Stream, e.Seq, p.Level, events.CurrentLevel)
		}
		c.Level = p.Level
	case *events.PoolSplit:
		pool, err := c.existing(e, p.Name)
		if err != nil {
			return err
		}
		if pool.Split {
			return invalid(e, "pool %q already has block streams", p.Name)
		}
		pool.Split = true
	case *events.AddressesReserved:
		if err := c.reserve(e, p); err != nil {
			return err
		}
	case *events.AddressesUnreserved:
		if err := c.unreserve(e, p); err != nil {
			return err
		}
	case *events.PoolNetworkBroadcastSet:
		pool, err := c.existing(e, p.Pool)
		if err != nil {
			return err
		}
		pool.SkipNetworkBroadcast = p.Skip
	case *events.PoolNodeSelectorSet:
		pool, err := c.existing(e, p.Name)
		if err != nil {
			return err
		}
		pool.NodeSelector = p.Selector
	case *events.PoolDisabled:
		pool, err := c.existing(e, p.Name)
		if err != nil {
			return err
		}
		if pool.Disabled {
			return invalid(e, "pool %q is already disabled", p.Name)
		}
		pool.Disabled, pool.DisabledReason = true, p.Reason
	case *events.PoolEnabled:
		pool, err := c.existing(e, p.Name)
		if err != nil {
			return err
		}
		if !pool.Disabled {
			return invalid(e, "pool %q is not disabled", p.Name)
		}
		pool.Disabled, pool.DisabledReason = false, ""
	case *events.Snapshot:
		if err := snapshotApply(&c.At, c, resetCluster, e, p); err != nil {
			return err
		}
	case *events.BlockAssigned, *events.BlockReleased, *events.BlockReclaimed,
		*events.AddressAssigned, *events.AddressReleased, *events.NodeRegistered, *events.NodeRetired,
		*events.NodeBlockAdded, *events.NodeBlockRemoved, *events.AddressClaimed, *events.AddressClaimReleased,
		*events.NodeLabelsSet:
		return wrongStream(e)
	default:
		return unknownType(e)
	}
	c.At.advance(e)
	return nil
}

// ---- pool streams ----

// Owner is who holds a block and since when.
type Owner struct {
	Node  string    `json:"node"`
	Since time.Time `json:"since"`
}

// Blocks is the state of a "pool/NAME" stream: which node owns which block, and the
// pool's fixed-address claims. The state of a block stream ("block/POOL/INDEX") is a
// Blocks too, with at most that one block and no claims.
type Blocks struct {
	At     head             `json:"head"`
	Owners map[uint64]Owner `json:"owners"`
	// Claims are the standing fixed-address claims (AddressClaimed), by the claim's
	// first address (the address of the pool subnet's first family, as Node.Held keys
	// them). Left out of the JSON when empty, so states of logs without claims hash as
	// they always did.
	Claims map[netip.Addr]*Claim `json:"claims,omitempty"`

	// free is a hint, not state (not encoded, not hashed): no index below it is free.
	// Assigning the index at the hint moves it past the owned run; a release below it
	// lowers it. A state loaded from a snapshot starts at 0, which is always true.
	free uint64
}

// Claim is a standing fixed-address claim: which attachment of which node holds Addrs,
// in which block, for which pod, since when.
type Claim struct {
	Addrs        []netip.Addr `json:"addrs"`
	Block        uint64       `json:"block"`
	Node         string       `json:"node"`
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
	Since        time.Time    `json:"since"`
}

// Pod is "NAMESPACE/NAME" of the claim's pod, "" when the claim names none.
func (c *Claim) Pod() string {
	if c.PodName == "" {
		return ""
	}
	return c.PodNamespace + "/" + c.PodName
}

// existing returns pool name, which event e (of the cluster stream) needs to exist.
func (c *Cluster) existing(e *events.Event, name string) (*Pool, error) {
	pool, ok := c.Pools[name]
	if !ok {
		return nil, invalid(e, "pool %q does not exist", name)
	}
	return pool, nil
}

// ClaimsBy returns the standing claims of node, ordered by their first address.
func (b *Blocks) ClaimsBy(node string) []*Claim {
	var out []*Claim
	for _, c := range b.Claims {
		if c.Node == node {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addrs[0].Less(out[j].Addrs[0]) })
	return out
}

// ClaimOf returns the standing claim holding addr (any of its families), if any. A nil
// Blocks has none.
func (b *Blocks) ClaimOf(addr netip.Addr) (*Claim, bool) {
	if b == nil || len(b.Claims) == 0 {
		return nil, false
	}
	if c, ok := b.Claims[addr]; ok {
		return c, true
	}
	for _, c := range b.Claims { // an address of another family than the key's
		for _, a := range c.Addrs {
			if a == addr {
				return c, true
			}
		}
	}
	return nil, false
}

// FirstFreeHint is an index at or below the lowest free block index: a search for the
// lowest free block may start there instead of at 0 (an IPv6 pool numbers up to 2^58
// blocks; blocks fill from the bottom in the pool-stream layout).
func (b *Blocks) FirstFreeHint() uint64 { return b.free }

// NewBlocks returns the empty state of a pool stream.
func NewBlocks() *Blocks { return &Blocks{Owners: map[uint64]Owner{}} }

func resetBlocks(b *Blocks) { *b = Blocks{Owners: map[uint64]Owner{}} }

// Apply folds one event of a pool stream. On error b is unchanged.
func (b *Blocks) Apply(e *events.Event) error {
	if err := b.At.check(e); err != nil {
		return err
	}
	switch p := e.Payload.(type) {
	case *events.BlockAssigned:
		if o, ok := b.Owners[p.Index]; ok {
			return invalid(e, "block %d already owned by node %q", p.Index, o.Node)
		}
		b.Owners[p.Index] = Owner{Node: p.Node, Since: e.Time}
		if p.Index == b.free {
			for {
				if _, owned := b.Owners[b.free]; !owned {
					break
				}
				b.free++ // past the owned run above the index just assigned
			}
		}
	case *events.BlockReleased:
		if err := b.release(e, p.Index, p.Node); err != nil {
			return err
		}
	case *events.BlockReclaimed:
		if err := b.release(e, p.Index, p.Node); err != nil {
			return err
		}
	case *events.AddressClaimed:
		if err := b.claim(e, p); err != nil {
			return err
		}
	case *events.AddressClaimReleased:
		if err := b.unclaim(e, p); err != nil {
			return err
		}
	case *events.Snapshot:
		if err := snapshotApply(&b.At, b, resetBlocks, e, p); err != nil {
			return err
		}
	case *events.PoolCreated, *events.PoolSubnetAdded, *events.PoolDeleted, *events.PoolSplit, *events.ClusterLevelRaised,
		*events.AddressAssigned, *events.AddressReleased, *events.NodeRegistered, *events.NodeRetired,
		*events.NodeBlockAdded, *events.NodeBlockRemoved,
		*events.AddressesReserved, *events.AddressesUnreserved, *events.PoolNetworkBroadcastSet,
		*events.PoolNodeSelectorSet, *events.PoolDisabled, *events.PoolEnabled, *events.NodeLabelsSet:
		return wrongStream(e)
	default:
		return unknownType(e)
	}
	b.At.advance(e)
	return nil
}

func (b *Blocks) claim(e *events.Event, p *events.AddressClaimed) error {
	if len(p.Addrs) == 0 || p.Node == "" || p.ContainerID == "" || p.IfName == "" {
		return invalid(e, "a claim needs addresses, a node, a container ID and an interface name")
	}
	for _, a := range p.Addrs {
		if c, ok := b.ClaimOf(a); ok {
			return invalid(e, "address %s is already claimed by %s/%s on node %q", a, c.ContainerID, c.IfName, c.Node)
		}
	}
	if b.Claims == nil {
		b.Claims = map[netip.Addr]*Claim{}
	}
	b.Claims[p.Addrs[0]] = &Claim{
		Addrs: append([]netip.Addr(nil), p.Addrs...), Block: p.Block, Node: p.Node, ContainerID: p.ContainerID, IfName: p.IfName,
		PodNamespace: p.PodNamespace, PodName: p.PodName, PodUID: p.PodUID, Since: e.Time,
	}
	return nil
}

func (b *Blocks) unclaim(e *events.Event, p *events.AddressClaimReleased) error {
	if len(p.Addrs) == 0 {
		return invalid(e, "no address")
	}
	c, ok := b.Claims[p.Addrs[0]]
	if !ok {
		return invalid(e, "address %s is not claimed", p.Addrs[0])
	}
	if c.Node != p.Node || c.ContainerID != p.ContainerID || c.IfName != p.IfName {
		return invalid(e, "address %s is claimed by %s/%s on node %q, not by %s/%s on node %q",
			p.Addrs[0], c.ContainerID, c.IfName, c.Node, p.ContainerID, p.IfName, p.Node)
	}
	delete(b.Claims, p.Addrs[0])
	if len(b.Claims) == 0 {
		b.Claims = nil
	}
	return nil
}

func (b *Blocks) release(e *events.Event, index uint64, node string) error {
	o, ok := b.Owners[index]
	if !ok {
		return invalid(e, "block %d is not owned", index)
	}
	if o.Node != node {
		return invalid(e, "block %d is owned by %q, not %q", index, o.Node, node)
	}
	delete(b.Owners, index)
	b.free = min(b.free, index)
	return nil
}

// OwnedBy lists the blocks node owns, in ascending order.
func (b *Blocks) OwnedBy(node string) []uint64 {
	var out []uint64
	for i, o := range b.Owners {
		if o.Node == node {
			out = append(out, i)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// ---- node streams ----

// AttachKey identifies an attachment: a container's interface.
type AttachKey struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// MarshalText makes AttachKey usable as a JSON map key ("id/ifname").
func (k AttachKey) MarshalText() ([]byte, error) { return []byte(k.ContainerID + "/" + k.IfName), nil }

// UnmarshalText parses "id/ifname".
func (k *AttachKey) UnmarshalText(b []byte) error {
	s := string(b)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			k.ContainerID, k.IfName = s[:i], s[i+1:]
			return nil
		}
	}
	return errors.Newf("attachment key %q: want ID/IFNAME", s)
}

// Assignment is an address assignment held by an attachment.
type Assignment struct {
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
	Pool         string       `json:"pool"`
	Block        uint64       `json:"block"`
	Addrs        []netip.Addr `json:"addrs"`
	Since        time.Time    `json:"since"`
	Seq          uint64       `json:"seq"`
}

// BlockRef names a block of a pool.
type BlockRef struct {
	Pool  string `json:"pool"`
	Index uint64 `json:"index"`
}

// MarshalText makes BlockRef usable as a JSON map key ("pool#index").
func (r BlockRef) MarshalText() ([]byte, error) {
	return []byte(r.Pool + "#" + strconv.FormatUint(r.Index, 10)), nil
}

// UnmarshalText parses "pool#index".
func (r *BlockRef) UnmarshalText(b []byte) error {
	s := string(b)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '#' {
			digits := s[i+1:]
			if digits == "" || strings.IndexFunc(digits, func(c rune) bool { return c < '0' || c > '9' }) >= 0 {
				return errors.Newf("block ref %q: bad index", s)
			}
			n, err := strconv.ParseUint(digits, 10, 64)
			if err != nil {
				return errors.Newf("block ref %q: bad index", s)
			}
			r.Pool, r.Index = s[:i], n
			return nil
		}
	}
	return errors.Newf("block ref %q: want POOL#INDEX", s)
}

// BlockUse counts a block's addresses on the node and remembers when it last became empty.
type BlockUse struct {
	InUse      int       `json:"inUse"`
	EmptySince time.Time `json:"emptySince,omitzero"`
}

// Node is the state of a "node/NAME" stream.
type Node struct {
	At         head                      `json:"head"`
	Name       string                    `json:"name"`
	Lease      int64                     `json:"lease"`
	Registered time.Time                 `json:"registered,omitzero"`
	Retired    bool                      `json:"retired,omitempty"`
	Attached   map[AttachKey]*Assignment `json:"attached"`
	Held       map[netip.Addr]AttachKey  `json:"held"`
	Use        map[BlockRef]*BlockUse    `json:"use"`
	Last       map[string]netip.Addr     `json:"last"` // per pool: the last address handed out (next-after-last)
	// Blocks are the blocks the node owns in pools with block streams, since when
	// (NodeBlockAdded, NodeBlockRemoved); blocks owned in a "pool/NAME" stream are not here.
	Blocks map[BlockRef]time.Time `json:"blocks,omitempty"`
	// Labels are the node's labels as its coild last recorded them (NodeLabelsSet);
	// nil before any (left out of the state's JSON, so older states hash as before).
	Labels map[string]string `json:"labels,omitempty"`
}

// LabelsString writes labels as "k1=v1,k2=v2" sorted by key ("" for none): how coild's
// refusals, coilctl and diffs show a node's labels.
func LabelsString(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// NewNode returns the empty state of a node stream.
func NewNode() *Node {
	n := &Node{}
	resetNode(n)
	return n
}

func resetNode(n *Node) {
	*n = Node{Attached: map[AttachKey]*Assignment{}, Held: map[netip.Addr]AttachKey{}, Use: map[BlockRef]*BlockUse{}, Last: map[string]netip.Addr{},
		Blocks: map[BlockRef]time.Time{}}
}

// Apply folds one event of a node stream. On error n is unchanged.
func (n *Node) Apply(e *events.Event) error {
	if err := n.At.check(e); err != nil {
		return err
	}
	switch p := e.Payload.(type) {
	case *events.NodeRegistered:
		if n.Name != "" && n.Name != p.Node {
			return invalid(e, "node %q registered in the stream of %q", p.Node, n.Name)
		}
		n.Name, n.Lease, n.Registered, n.Retired = p.Node, p.Lease, e.Time, false
	case *events.NodeRetired:
		if len(n.Attached) > 0 {
			// Retiring releases nothing by itself: the retirer releases addresses first.
			return invalid(e, "node %q retired while %d addresses are attached", p.Node, len(n.Attached))
		}
		n.Retired, n.Lease = true, 0
	case *events.AddressAssigned:
		if err := n.assign(e, p); err != nil {
			return err
		}
	case *events.AddressReleased:
		if err := n.release(e, p); err != nil {
			return err
		}
	case *events.NodeBlockAdded:
		ref := BlockRef{Pool: p.Pool, Index: p.Index}
		if _, ok := n.Blocks[ref]; ok {
			return invalid(e, "block %d of %q is already the node's", p.Index, p.Pool)
		}
		if n.Blocks == nil {
			n.Blocks = map[BlockRef]time.Time{}
		}
		n.Blocks[ref] = e.Time
	case *events.NodeBlockRemoved:
		ref := BlockRef{Pool: p.Pool, Index: p.Index}
		if _, ok := n.Blocks[ref]; !ok {
			return invalid(e, "block %d of %q is not the node's", p.Index, p.Pool)
		}
		if u := n.Use[ref]; u != nil && u.InUse > 0 {
			return invalid(e, "block %d of %q removed while %d of its addresses are in use", p.Index, p.Pool, u.InUse)
		}
		delete(n.Blocks, ref)
	case *events.NodeLabelsSet:
		if n.Name != "" && p.Node != n.Name {
			return invalid(e, "labels of node %q in the stream of %q", p.Node, n.Name)
		}
		n.Labels = make(map[string]string, len(p.Labels))
		for k, v := range p.Labels {
			n.Labels[k] = v
		}
	case *events.Snapshot:
		if err := snapshotApply(&n.At, n, resetNode, e, p); err != nil {
			return err
		}
	case *events.PoolCreated, *events.PoolSubnetAdded, *events.PoolDeleted, *events.PoolSplit, *events.ClusterLevelRaised,
		*events.BlockAssigned, *events.BlockReleased, *events.BlockReclaimed,
		*events.AddressesReserved, *events.AddressesUnreserved, *events.PoolNetworkBroadcastSet,
		*events.AddressClaimed, *events.AddressClaimReleased,
		*events.PoolNodeSelectorSet, *events.PoolDisabled, *events.PoolEnabled:
		return wrongStream(e)
	default:
		return unknownType(e)
	}
	n.At.advance(e)
	return nil
}

func (n *Node) assign(e *events.Event, p *events.AddressAssigned) error {
	key := AttachKey{ContainerID: p.ContainerID, IfName: p.IfName}
	if p.ContainerID == "" || p.IfName == "" {
		return invalid(e, "empty container ID or interface name")
	}
	if a, ok := n.Attached[key]; ok {
		return invalid(e, "%s/%s already holds %v", p.ContainerID, p.IfName, a.Addrs)
	}
	if len(p.Addrs) == 0 {
		return invalid(e, "no address")
	}
	for _, a := range p.Addrs {
		if holder, ok := n.Held[a]; ok {
			return invalid(e, "address %s already held by %s/%s", a, holder.ContainerID, holder.IfName)
		}
	}
	n.Attached[key] = &Assignment{
		PodNamespace: p.PodNamespace, PodName: p.PodName, PodUID: p.PodUID,
		Pool: p.Pool, Block: p.Block, Addrs: append([]netip.Addr(nil), p.Addrs...), Since: e.Time, Seq: e.Seq,
	}
	for _, a := range p.Addrs {
		n.Held[a] = key
	}
	ref := BlockRef{Pool: p.Pool, Index: p.Block}
	u := n.Use[ref]
	if u == nil {
		u = &BlockUse{}
		n.Use[ref] = u
	}
	u.InUse++
	u.EmptySince = time.Time{}
	n.Last[p.Pool] = p.Addrs[0]
	return nil
}

func (n *Node) release(e *events.Event, p *events.AddressReleased) error {
	key := AttachKey{ContainerID: p.ContainerID, IfName: p.IfName}
	a, ok := n.Attached[key]
	if !ok {
		return invalid(e, "%s/%s holds no address", p.ContainerID, p.IfName)
	}
	delete(n.Attached, key)
	for _, addr := range a.Addrs {
		delete(n.Held, addr)
	}
	ref := BlockRef{Pool: a.Pool, Index: a.Block}
	if u := n.Use[ref]; u != nil {
		u.InUse--
		if u.InUse <= 0 {
			u.InUse, u.EmptySince = 0, e.Time
		}
	}
	return nil
}

// ---- hashes and snapshots ----

// StateHash returns the deterministic hash of a stream state (*Cluster, *Blocks or *Node).
func StateHash(s any) (events.Hash, error) {
	h, _, err := hashJSON(s)
	return h, err
}

// SnapshotOf returns the Snapshot payload for a stream state.
func SnapshotOf(s any) (*events.Snapshot, error) {
	h, b, err := hashJSON(s)
	if err != nil {
		return nil, err
	}
	return &events.Snapshot{StateHash: h, State: b}, nil
}

// Head returns the cluster stream's position.
func (c *Cluster) Head() events.Version { return c.At.Version() }

// Head returns the pool stream's position.
func (b *Blocks) Head() events.Version { return b.At.Version() }

// Head returns the node stream's position.
func (n *Node) Head() events.Version { return n.At.Version() }
