package events

import (
	"net/netip"
	"sort"
)

// Payload is the typed body of an event. The set is closed: every payload type is
// declared in this file, has a stable Type string and a canonical binary encoding.
type Payload interface {
	EventType() Type
	appendTo(w *writer)
	readFrom(r *reader)
}

// Subnet is one subnet of a pool: IPv4, IPv6, or both (dual stack). In a dual-stack
// subnet block i has an IPv4 and an IPv6 part, and a pod gets the same offset in each.
type Subnet struct {
	IPv4 netip.Prefix `json:"ipv4,omitzero"`
	IPv6 netip.Prefix `json:"ipv6,omitzero"`
}

// String is the subnet as coilctl takes and prints it: "10.0.0.0/16", "fd00::/112", or
// "10.0.0.0/16,fd00::/112" for dual stack.
func (s Subnet) String() string {
	switch {
	case s.IPv4.IsValid() && s.IPv6.IsValid():
		return s.IPv4.String() + "," + s.IPv6.String()
	case s.IPv4.IsValid():
		return s.IPv4.String()
	}
	return s.IPv6.String()
}

// PoolCreated defines a pool (stream "cluster").
type PoolCreated struct {
	Name          string   `json:"name"`
	BlockSizeBits uint8    `json:"blockSizeBits"`
	Subnets       []Subnet `json:"subnets"`
}

// PoolSubnetAdded adds a subnet to a pool; its blocks are numbered after the existing ones.
type PoolSubnetAdded struct {
	Name   string `json:"name"`
	Subnet Subnet `json:"subnet"`
}

// PoolDeleted removes a pool (only when none of its blocks is in use).
type PoolDeleted struct {
	Name string `json:"name"`
}

// PoolSplit (stream "cluster"): from here on, each block of pool Name has an ownership
// stream of its own, "block/NAME/INDEX", instead of all of them sharing "pool/NAME"
// (docs/design.md, "Block streams"). Blocks owned in "pool/NAME" when it is appended stay
// recorded there until released; no block is assigned in "pool/NAME" any more.
type PoolSplit struct {
	Name string `json:"name"`
}

// BlockAssigned gives block Index of the stream's pool to Node (stream "pool/POOL" or
// "block/POOL/INDEX").
type BlockAssigned struct {
	Index uint64 `json:"index"`
	Node  string `json:"node"`
}

// BlockReleased: Node gave block Index back (it stayed empty past the grace period).
type BlockReleased struct {
	Index  uint64 `json:"index"`
	Node   string `json:"node"`
	Reason string `json:"reason,omitempty"`
}

// BlockReclaimed: block Index was taken back from Node, whose lease was gone.
type BlockReclaimed struct {
	Index  uint64 `json:"index"`
	Node   string `json:"node"`
	Reason string `json:"reason,omitempty"`
}

// AddressAssigned: the node gave Addrs (one per family of the pool) to a container's interface.
type AddressAssigned struct {
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
	Pool         string       `json:"pool"`
	Block        uint64       `json:"block"`
	Addrs        []netip.Addr `json:"addrs"`
}

// AddressReleased: the container's interface gave its addresses back.
type AddressReleased struct {
	ContainerID string       `json:"containerID"`
	IfName      string       `json:"ifName"`
	Pool        string       `json:"pool"`
	Block       uint64       `json:"block"`
	Addrs       []netip.Addr `json:"addrs"`
	Reason      string       `json:"reason,omitempty"`
}

// NodeRegistered: a node's daemon started with a new lease (stream node/NAME).
type NodeRegistered struct {
	Node  string `json:"node"`
	Lease int64  `json:"lease"`
}

// NodeRetired: a node was removed; its blocks were reclaimed.
type NodeRetired struct {
	Node   string `json:"node"`
	Reason string `json:"reason,omitempty"`
}

// ClusterLevelRaised (stream "cluster"): from here on the cluster's feature level is
// Level (see Level). Appended only while every live coild records at least Level in its
// liveness key; levels never go down.
type ClusterLevelRaised struct {
	Level Level `json:"level"`
}

// NodeBlockAdded (stream "node/NAME"): the node took block Index of Pool, a pool with
// block streams. Appended in the same transaction as the block stream's BlockAssigned, so
// a node finds its own blocks in its own stream.
type NodeBlockAdded struct {
	Pool  string `json:"pool"`
	Index uint64 `json:"index"`
}

// NodeBlockRemoved (stream "node/NAME"): the node no longer owns block Index of Pool
// (released or reclaimed: Reason says which and why). Appended in the same transaction
// as the block stream's BlockReleased or BlockReclaimed.
type NodeBlockRemoved struct {
	Pool   string `json:"pool"`
	Index  uint64 `json:"index"`
	Reason string `json:"reason,omitempty"`
}

// AddrRange is an inclusive range of addresses of one family, First <= Last: "10.1.0.5"
// is {10.1.0.5, 10.1.0.5}, "10.1.0.0/30" is {10.1.0.0, 10.1.0.3}.
type AddrRange struct {
	First netip.Addr `json:"first"`
	Last  netip.Addr `json:"last"`
}

// String is the range as coilctl prints it: "A" for one address, "A-B" for more.
func (r AddrRange) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// AddressesReserved (stream "cluster"): the addresses of Ranges, all in pool Pool, are
// never handed out from here on. In a dual-stack pool a pod gets the same offset in both
// families, so a reserved address keeps its whole offset (both families) out of use.
// AfterRelease: the operator reserved addresses that pods held at the time; they keep
// them, and each takes effect as its holder releases it (nothing more is written then).
type AddressesReserved struct {
	Pool         string      `json:"pool"`
	Ranges       []AddrRange `json:"ranges"`
	Reason       string      `json:"reason,omitempty"`
	AfterRelease bool        `json:"afterRelease,omitempty"`
}

// AddressesUnreserved (stream "cluster"): the addresses of Ranges, every one of them
// reserved, may be handed out again. A reservation partly covered keeps the rest.
type AddressesUnreserved struct {
	Pool   string      `json:"pool"`
	Ranges []AddrRange `json:"ranges"`
	Reason string      `json:"reason,omitempty"`
}

// PoolNetworkBroadcastSet (stream "cluster"): whether pool Pool skips the network and
// broadcast address (the first and the last) of each of its IPv4 subnets of at most /30.
// A pool without this event hands them out, as pools did before it existed; coilctl
// creates pools with Skip set (docs/design.md, "Decisions").
type PoolNetworkBroadcastSet struct {
	Pool string `json:"pool"`
	Skip bool   `json:"skip"`
}

// AddressClaimed (stream "pool/POOL"): Node claimed Addrs, a fixed address asked for by
// a pod (annotation coil.cybozu.com/ip or the CNI "ips" capability), for a container's
// interface. Addrs are one per family of the pool's subnet, at the same offset of block
// Block, whoever owns that block (or nobody). Appended in the same transaction as the
// claiming node's AddressAssigned of the same addresses; the event's actor and time say
// who claimed and when. While the claim stands no other attachment gets these addresses
// (docs/design.md, "Fixed addresses").
type AddressClaimed struct {
	Addrs        []netip.Addr `json:"addrs"`
	Block        uint64       `json:"block"`
	Node         string       `json:"node"`
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
}

// AddressClaimReleased (stream "pool/POOL"): the claim of Addrs by the named attachment
// of Node ended (its address was released: CNI DEL, GC, an operator's release, a
// reclaim; or a later claim found the attachment gone, Reason says which).
type AddressClaimReleased struct {
	Addrs       []netip.Addr `json:"addrs"`
	Block       uint64       `json:"block"`
	Node        string       `json:"node"`
	ContainerID string       `json:"containerID"`
	IfName      string       `json:"ifName"`
	Reason      string       `json:"reason,omitempty"`
}

// PoolNodeSelectorSet (stream "cluster"): from here on, only nodes whose labels match
// Selector (Kubernetes label-selector syntax, in the canonical form
// k8s.io/apimachinery/pkg/labels writes) take blocks of pool Name; an empty Selector
// lets every node use it. Appended by coilctl pool create --node-selector and pool
// set-node-selector.
type PoolNodeSelectorSet struct {
	Name     string `json:"name"`
	Selector string `json:"selector"`
}

// PoolDisabled (stream "cluster"): pool Name hands out no new block or address from here
// on; the addresses and blocks it has stay with their holders until released.
type PoolDisabled struct {
	Name   string `json:"name"`
	Reason string `json:"reason,omitempty"`
}

// PoolEnabled (stream "cluster"): a disabled pool Name hands out addresses again.
type PoolEnabled struct {
	Name string `json:"name"`
}

// NodeLabelsSet (stream "node/NAME"): the node's labels, as its coild found them (the
// Node object's, and coild --node-labels), are Labels from here on. Pools with a node
// selector are matched against them. Appended by coild when they differ from the
// labels last recorded.
type NodeLabelsSet struct {
	Node   string            `json:"node"`
	Labels map[string]string `json:"labels"`
}

// Snapshot holds the projected state of its stream up to the event before it, in the
// projection package's canonical encoding, and that state's hash. Readers may start from
// the newest snapshot instead of the stream's first event.
type Snapshot struct {
	StateHash Hash   `json:"stateHash"`
	State     []byte `json:"state"`
}

func (*PoolCreated) EventType() Type      { return TypePoolCreated }
func (*PoolSubnetAdded) EventType() Type  { return TypePoolSubnetAdded }
func (*PoolDeleted) EventType() Type      { return TypePoolDeleted }
func (*BlockAssigned) EventType() Type    { return TypeBlockAssigned }
func (*BlockReleased) EventType() Type    { return TypeBlockReleased }
func (*BlockReclaimed) EventType() Type   { return TypeBlockReclaimed }
func (*AddressAssigned) EventType() Type  { return TypeAddressAssigned }
func (*AddressReleased) EventType() Type  { return TypeAddressReleased }
func (*NodeRegistered) EventType() Type   { return TypeNodeRegistered }
func (*NodeRetired) EventType() Type      { return TypeNodeRetired }
func (*Snapshot) EventType() Type         { return TypeSnapshot }
func (*PoolSplit) EventType() Type        { return TypePoolSplit }
func (*NodeBlockAdded) EventType() Type   { return TypeNodeBlockAdded }
func (*NodeBlockRemoved) EventType() Type { return TypeNodeBlockRemoved }

func (*ClusterLevelRaised) EventType() Type { return TypeClusterLevelRaised }

func (*AddressesReserved) EventType() Type       { return TypeAddressesReserved }
func (*AddressesUnreserved) EventType() Type     { return TypeAddressesUnreserved }
func (*PoolNetworkBroadcastSet) EventType() Type { return TypePoolNetworkBroadcastSet }
func (*AddressClaimed) EventType() Type          { return TypeAddressClaimed }
func (*AddressClaimReleased) EventType() Type    { return TypeAddressClaimReleased }
func (*PoolNodeSelectorSet) EventType() Type     { return TypePoolNodeSelectorSet }
func (*PoolDisabled) EventType() Type            { return TypePoolDisabled }
func (*PoolEnabled) EventType() Type             { return TypePoolEnabled }
func (*NodeLabelsSet) EventType() Type           { return TypeNodeLabelsSet }

// newPayload returns an empty payload of type t, or nil for an unknown type.
func newPayload(t Type) Payload {
	switch t {
	case TypePoolCreated:
		return &PoolCreated{}
	case TypePoolSubnetAdded:
		return &PoolSubnetAdded{}
	case TypePoolDeleted:
		return &PoolDeleted{}
	case TypeBlockAssigned:
		return &BlockAssigned{}
	case TypeBlockReleased:
		return &BlockReleased{}
	case TypeBlockReclaimed:
		return &BlockReclaimed{}
	case TypeAddressAssigned:
		return &AddressAssigned{}
	case TypeAddressReleased:
		return &AddressReleased{}
	case TypeNodeRegistered:
		return &NodeRegistered{}
	case TypeNodeRetired:
		return &NodeRetired{}
	case TypeSnapshot:
		return &Snapshot{}
	case TypeClusterLevelRaised:
		return &ClusterLevelRaised{}
	case TypePoolSplit:
		return &PoolSplit{}
	case TypeNodeBlockAdded:
		return &NodeBlockAdded{}
	case TypeNodeBlockRemoved:
		return &NodeBlockRemoved{}
	case TypeAddressesReserved:
		return &AddressesReserved{}
	case TypeAddressesUnreserved:
		return &AddressesUnreserved{}
	case TypePoolNetworkBroadcastSet:
		return &PoolNetworkBroadcastSet{}
	case TypeAddressClaimed:
		return &AddressClaimed{}
	case TypeAddressClaimReleased:
		return &AddressClaimReleased{}
	case TypePoolNodeSelectorSet:
		return &PoolNodeSelectorSet{}
	case TypePoolDisabled:
		return &PoolDisabled{}
	case TypePoolEnabled:
		return &PoolEnabled{}
	case TypeNodeLabelsSet:
		return &NodeLabelsSet{}
	}
	return nil
}

// AllTypes lists every event type, for documentation and exhaustiveness tests.
func AllTypes() []Type {
	return []Type{
		TypePoolCreated, TypePoolSubnetAdded, TypePoolDeleted,
		TypeBlockAssigned, TypeBlockReleased, TypeBlockReclaimed,
		TypeAddressAssigned, TypeAddressReleased,
		TypeNodeRegistered, TypeNodeRetired, TypeSnapshot,
		TypePoolSplit, TypeNodeBlockAdded, TypeNodeBlockRemoved,
		TypeClusterLevelRaised,
		TypeAddressesReserved, TypeAddressesUnreserved, TypePoolNetworkBroadcastSet,
		TypeAddressClaimed, TypeAddressClaimReleased,
		TypePoolNodeSelectorSet, TypePoolDisabled, TypePoolEnabled, TypeNodeLabelsSet,
	}
}

// NewPayload returns an empty payload of type t and reports whether t is known.
func NewPayload(t Type) (Payload, bool) {
	p := newPayload(t)
	return p, p != nil
}

func (p *PoolCreated) appendTo(w *writer) {
	w.str(p.Name)
	w.uvarint(uint64(p.BlockSizeBits))
	w.uvarint(uint64(len(p.Subnets)))
	for _, s := range p.Subnets {
		w.subnet(s)
	}
}

func (p *PoolCreated) readFrom(r *reader) {
	p.Name = r.name()
	p.BlockSizeBits = uint8(r.uvarintMax(128))
	n := r.count(2)
	p.Subnets = make([]Subnet, n)
	for i := range p.Subnets {
		p.Subnets[i] = r.subnet()
	}
}

func (p *PoolSubnetAdded) appendTo(w *writer) { w.str(p.Name); w.subnet(p.Subnet) }
func (p *PoolSubnetAdded) readFrom(r *reader) { p.Name = r.name(); p.Subnet = r.subnet() }
func (p *PoolDeleted) appendTo(w *writer)     { w.str(p.Name) }
func (p *PoolDeleted) readFrom(r *reader)     { p.Name = r.name() }

func (p *BlockAssigned) appendTo(w *writer) { w.uvarint(p.Index); w.str(p.Node) }
func (p *BlockAssigned) readFrom(r *reader) { p.Index = r.uvarint(); p.Node = r.name() }

func (p *BlockReleased) appendTo(w *writer) {
	w.uvarint(p.Index)
	w.str(p.Node)
	w.str(p.Reason)
}

func (p *BlockReleased) readFrom(r *reader) {
	p.Index = r.uvarint()
	p.Node = r.name()
	p.Reason = r.name()
}

func (p *BlockReclaimed) appendTo(w *writer) {
	w.uvarint(p.Index)
	w.str(p.Node)
	w.str(p.Reason)
}

func (p *BlockReclaimed) readFrom(r *reader) {
	p.Index = r.uvarint()
	p.Node = r.name()
	p.Reason = r.name()
}

func (p *AddressAssigned) appendTo(w *writer) {
	w.id(p.ContainerID)
	w.str(p.IfName)
	w.str(p.PodNamespace)
	w.str(p.PodName)
	w.id(p.PodUID)
	w.str(p.Pool)
	w.uvarint(p.Block)
	w.addrs(p.Addrs)
}

func (p *AddressAssigned) readFrom(r *reader) {
	p.ContainerID = r.id()
	p.IfName = r.name()
	p.PodNamespace = r.name()
	p.PodName = r.str()
	p.PodUID = r.id()
	p.Pool = r.name()
	p.Block = r.uvarint()
	p.Addrs = r.addrs()
}

func (p *AddressReleased) appendTo(w *writer) {
	w.id(p.ContainerID)
	w.str(p.IfName)
	w.str(p.Pool)
	w.uvarint(p.Block)
	w.addrs(p.Addrs)
	w.str(p.Reason)
}

func (p *AddressReleased) readFrom(r *reader) {
	p.ContainerID = r.id()
	p.IfName = r.name()
	p.Pool = r.name()
	p.Block = r.uvarint()
	p.Addrs = r.addrs()
	p.Reason = r.name()
}

func (p *NodeRegistered) appendTo(w *writer) { w.str(p.Node); w.uvarint(uint64(p.Lease)) }
func (p *NodeRegistered) readFrom(r *reader) { p.Node = r.name(); p.Lease = int64(r.uvarint()) }
func (p *NodeRetired) appendTo(w *writer)    { w.str(p.Node); w.str(p.Reason) }
func (p *NodeRetired) readFrom(r *reader)    { p.Node = r.name(); p.Reason = r.name() }

func (p *ClusterLevelRaised) appendTo(w *writer) { w.uvarint(uint64(p.Level)) }
func (p *ClusterLevelRaised) readFrom(r *reader) { p.Level = Level(r.u32()) }

func (p *PoolSplit) appendTo(w *writer) { w.str(p.Name) }
func (p *PoolSplit) readFrom(r *reader) { p.Name = r.name() }

func (p *NodeBlockAdded) appendTo(w *writer) { w.str(p.Pool); w.uvarint(p.Index) }
func (p *NodeBlockAdded) readFrom(r *reader) { p.Pool = r.name(); p.Index = r.uvarint() }

func (p *NodeBlockRemoved) appendTo(w *writer) {
	w.str(p.Pool)
	w.uvarint(p.Index)
	w.str(p.Reason)
}

func (p *NodeBlockRemoved) readFrom(r *reader) {
	p.Pool = r.name()
	p.Index = r.uvarint()
	p.Reason = r.name()
}

func (p *AddressClaimed) appendTo(w *writer) {
	w.addrs(p.Addrs)
	w.uvarint(p.Block)
	w.str(p.Node)
	w.id(p.ContainerID)
	w.str(p.IfName)
	w.str(p.PodNamespace)
	w.str(p.PodName)
	w.id(p.PodUID)
}

func (p *AddressClaimed) readFrom(r *reader) {
	p.Addrs = r.addrs()
	p.Block = r.uvarint()
	p.Node = r.name()
	p.ContainerID = r.id()
	p.IfName = r.name()
	p.PodNamespace = r.name()
	p.PodName = r.str()
	p.PodUID = r.id()
}

func (p *AddressClaimReleased) appendTo(w *writer) {
	w.addrs(p.Addrs)
	w.uvarint(p.Block)
	w.str(p.Node)
	w.id(p.ContainerID)
	w.str(p.IfName)
	w.str(p.Reason)
}

func (p *AddressClaimReleased) readFrom(r *reader) {
	p.Addrs = r.addrs()
	p.Block = r.uvarint()
	p.Node = r.name()
	p.ContainerID = r.id()
	p.IfName = r.name()
	p.Reason = r.name()
}

func (p *PoolNodeSelectorSet) appendTo(w *writer) { w.str(p.Name); w.str(p.Selector) }
func (p *PoolNodeSelectorSet) readFrom(r *reader) { p.Name = r.name(); p.Selector = r.str() }
func (p *PoolDisabled) appendTo(w *writer)        { w.str(p.Name); w.str(p.Reason) }
func (p *PoolDisabled) readFrom(r *reader)        { p.Name = r.name(); p.Reason = r.str() }
func (p *PoolEnabled) appendTo(w *writer)         { w.str(p.Name) }
func (p *PoolEnabled) readFrom(r *reader)         { p.Name = r.name() }

// NodeLabelsSet stores its labels sorted by key, so that the encoding is a function of
// the map; a reader refuses keys out of order or repeated (they would not re-encode to
// the same bytes).
func (p *NodeLabelsSet) appendTo(w *writer) {
	w.str(p.Node)
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	w.uvarint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		w.str(p.Labels[k])
	}
}

func (p *NodeLabelsSet) readFrom(r *reader) {
	p.Node = r.name()
	n := r.count(2)
	p.Labels = make(map[string]string, n)
	prev := ""
	for i := 0; i < n && r.err == nil; i++ {
		k, v := r.str(), r.str()
		if i > 0 && k <= prev {
			r.fail("node labels out of order or repeated")
			return
		}
		p.Labels[k], prev = v, k
	}
}

func (p *Snapshot) appendTo(w *writer) { w.raw(p.StateHash[:]); w.bytes(p.State) }
func (p *Snapshot) readFrom(r *reader) {
	copy(p.StateHash[:], r.fixed(len(p.StateHash)))
	p.State = append([]byte(nil), r.bytesField()...)
}

func (p *AddressesReserved) appendTo(w *writer) {
	w.str(p.Pool)
	w.ranges(p.Ranges)
	w.str(p.Reason)
	w.bool(p.AfterRelease)
}

func (p *AddressesReserved) readFrom(r *reader) {
	p.Pool = r.name()
	p.Ranges = r.ranges()
	p.Reason = r.str()
	p.AfterRelease = r.bool()
}

func (p *AddressesUnreserved) appendTo(w *writer) { w.str(p.Pool); w.ranges(p.Ranges); w.str(p.Reason) }
func (p *AddressesUnreserved) readFrom(r *reader) {
	p.Pool = r.name()
	p.Ranges = r.ranges()
	p.Reason = r.str()
}

func (p *PoolNetworkBroadcastSet) appendTo(w *writer) { w.str(p.Pool); w.bool(p.Skip) }
func (p *PoolNetworkBroadcastSet) readFrom(r *reader) { p.Pool = r.name(); p.Skip = r.bool() }
