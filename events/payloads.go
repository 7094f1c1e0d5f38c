package events

import (
	"net/netip"
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

func (p *Snapshot) appendTo(w *writer) { w.raw(p.StateHash[:]); w.bytes(p.State) }
func (p *Snapshot) readFrom(r *reader) {
	copy(p.StateHash[:], r.fixed(len(p.StateHash)))
	p.State = append([]byte(nil), r.bytesField()...)
}
