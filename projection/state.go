package projection

import (
	"crypto/sha256"
	"sort"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// State is the projection of a set of streams: the cluster stream, pool streams, block
// streams and node streams. A node daemon holds the cluster, every pool stream, its own
// node and the block streams it touched; an operator's tool may hold everything.
type State struct {
	Cluster *Cluster
	Pools   map[string]*Blocks
	// BlockStreams are the states of the block streams folded ("block/POOL/INDEX").
	BlockStreams map[BlockRef]*Blocks
	Nodes        map[string]*Node
}

// NewState returns the empty state.
func NewState() *State {
	return &State{Cluster: NewCluster(), Pools: map[string]*Blocks{}, BlockStreams: map[BlockRef]*Blocks{}, Nodes: map[string]*Node{}}
}

// applyBlock folds an event of a block stream: its state is a Blocks holding that block
// alone, and a block event must name the stream's block.
func (s *State) applyBlock(e *events.Event) error {
	pool, index, ok := e.Stream.Block()
	if !ok {
		return errors.Wrapf(events.ErrInvalidStream, "%q", string(e.Stream))
	}
	var named uint64
	switch p := e.Payload.(type) {
	case *events.BlockAssigned:
		named = p.Index
	case *events.BlockReleased:
		named = p.Index
	case *events.BlockReclaimed:
		named = p.Index
	case *events.AddressClaimed, *events.AddressClaimReleased:
		return wrongStream(e) // claims are recorded in the pool stream
	default:
		named = index
	}
	if named != index {
		return invalid(e, "block %d in the stream of block %d", named, index)
	}
	ref := BlockRef{Pool: pool, Index: index}
	if s.BlockStreams == nil {
		s.BlockStreams = map[BlockRef]*Blocks{}
	}
	return applyTo(s.BlockStreams, ref, NewBlocks, e)
}

// applyTo folds e into m[k], the state of e's stream, or into a new one made by mk that
// joins m only once e applied (a failed first event leaves no state behind).
func applyTo[K comparable, P interface{ Apply(*events.Event) error }](m map[K]P, k K, mk func() P, e *events.Event) error {
	if p, ok := m[k]; ok {
		return p.Apply(e)
	}
	p := mk()
	if err := p.Apply(e); err != nil {
		return err
	}
	m[k] = p
	return nil
}

// Apply folds e into the state of its stream. On error the state is unchanged.
func (s *State) Apply(e *events.Event) error {
	kind, name := e.Stream.Kind()
	switch kind {
	case "cluster":
		return s.Cluster.Apply(e)
	case "pool":
		return applyTo(s.Pools, name, NewBlocks, e)
	case "block":
		return s.applyBlock(e)
	case "node":
		return applyTo(s.Nodes, name, NewNode, e)
	}
	return errors.Wrapf(events.ErrInvalidStream, "%q", string(e.Stream))
}

// blockRef returns the block of a block stream.
func blockRef(stream events.Stream) (BlockRef, bool) {
	pool, index, ok := stream.Block()
	return BlockRef{Pool: pool, Index: index}, ok
}

// Head returns the position of a stream in this state (zero if absent).
func (s *State) Head(stream events.Stream) events.Version {
	kind, name := stream.Kind()
	switch kind {
	case "cluster":
		return s.Cluster.Head()
	case "pool":
		if b := s.Pools[name]; b != nil {
			return b.Head()
		}
	case "block":
		if ref, ok := blockRef(stream); ok {
			if b := s.BlockStreams[ref]; b != nil {
				return b.Head()
			}
		}
	case "node":
		if n := s.Nodes[name]; n != nil {
			return n.Head()
		}
	}
	return events.Version{}
}

// Hash is the deterministic hash of the whole state: the streams' state hashes in
// stream-name order.
func (s *State) Hash() (events.Hash, error) {
	type entry struct {
		name string
		st   any
	}
	all := []entry{{"cluster", s.Cluster}}
	for n, b := range s.Pools {
		all = append(all, entry{string(events.PoolStream(n)), b})
	}
	for ref, b := range s.BlockStreams {
		all = append(all, entry{string(events.BlockStream(ref.Pool, ref.Index)), b})
	}
	for n, st := range s.Nodes {
		all = append(all, entry{string(events.NodeStream(n)), st})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].name < all[j].name })
	h := sha256.New()
	for _, e := range all {
		sh, err := StateHash(e.st)
		if err != nil {
			return events.Hash{}, err
		}
		h.Write([]byte(e.name))
		h.Write([]byte{0})
		h.Write(sh[:])
	}
	var out events.Hash
	h.Sum(out[:0])
	return out, nil
}

// Owner returns the owner of a block, if any: from its block stream, or else from the
// pool stream (blocks owned there before the pool was split stay recorded there).
func (s *State) Owner(pool string, index uint64) (Owner, bool) {
	if b := s.BlockStreams[BlockRef{Pool: pool, Index: index}]; b != nil {
		if o, ok := b.Owners[index]; ok {
			return o, true
		}
	}
	b := s.Pools[pool]
	if b == nil {
		return Owner{}, false
	}
	o, ok := b.Owners[index]
	return o, ok
}

// AllOwners returns the owned blocks of every pool the state folded, by pool name (pool
// streams and block streams together; pools without an owned block are absent).
func (s *State) AllOwners() map[string]map[uint64]Owner {
	out := map[string]map[uint64]Owner{}
	add := func(pool string, idx uint64, o Owner) {
		if out[pool] == nil {
			out[pool] = map[uint64]Owner{}
		}
		out[pool][idx] = o
	}
	for pool, b := range s.Pools {
		for i, o := range b.Owners {
			add(pool, i, o)
		}
	}
	for ref, b := range s.BlockStreams {
		if o, ok := b.Owners[ref.Index]; ok {
			add(ref.Pool, ref.Index, o)
		}
	}
	return out
}

// PoolOwners returns every owned block of a pool that the state folded: the pool
// stream's owners and the block streams' (a block is in one of them at a time).
func (s *State) PoolOwners(pool string) map[uint64]Owner {
	out := map[uint64]Owner{}
	if b := s.Pools[pool]; b != nil {
		for i, o := range b.Owners {
			out[i] = o
		}
	}
	for ref, b := range s.BlockStreams {
		if ref.Pool != pool {
			continue
		}
		if o, ok := b.Owners[ref.Index]; ok {
			out[ref.Index] = o
		}
	}
	return out
}

// StreamState returns the state of one stream (*Cluster, *Blocks or *Node), the empty
// state if the stream has no events yet; nil for an invalid stream name.
func (s *State) StreamState(stream events.Stream) any {
	kind, name := stream.Kind()
	switch kind {
	case "cluster":
		return s.Cluster
	case "pool":
		if b := s.Pools[name]; b != nil {
			return b
		}
		return NewBlocks()
	case "block":
		if ref, ok := blockRef(stream); ok {
			if b := s.BlockStreams[ref]; b != nil {
				return b
			}
			return NewBlocks()
		}
	case "node":
		if n := s.Nodes[name]; n != nil {
			return n
		}
		return NewNode()
	}
	return nil
}

// Merge takes stream's state from other (a state that folded that stream alone) into s.
func (s *State) Merge(stream events.Stream, other *State) {
	kind, name := stream.Kind()
	switch kind {
	case "cluster":
		s.Cluster = other.Cluster
	case "pool":
		if b := other.Pools[name]; b != nil {
			s.Pools[name] = b
		}
	case "block":
		if ref, ok := blockRef(stream); ok {
			if b := other.BlockStreams[ref]; b != nil {
				if s.BlockStreams == nil {
					s.BlockStreams = map[BlockRef]*Blocks{}
				}
				s.BlockStreams[ref] = b
			}
		}
	case "node":
		if n := other.Nodes[name]; n != nil {
			s.Nodes[name] = n
		}
	}
}
