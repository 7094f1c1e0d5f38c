package allocator

import (
	"maps"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// BlockInfo is a block the node owns.
type BlockInfo struct {
	Pool     string
	Index    uint64
	Prefixes []netip.Prefix
	Since    time.Time
}

// Blocks lists the blocks the node owns, by pool and index.
func (n *Node) Blocks() []BlockInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []BlockInfo
	names := map[string]bool{}
	for name := range n.st.Pools {
		names[name] = true
	}
	for ref := range n.me().Blocks {
		names[ref.Pool] = true
	}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		pool := n.st.Cluster.Pools[name]
		for _, idx := range n.owned(name) {
			bi := BlockInfo{Pool: name, Index: idx}
			if since, ok := n.me().Blocks[projection.BlockRef{Pool: name, Index: idx}]; ok {
				bi.Since = since
			} else {
				bi.Since = n.st.Pools[name].Owners[idx].Since
			}
			if pool != nil {
				bi.Prefixes, _ = pool.Block(idx)
			}
			out = append(out, bi)
		}
	}
	return out
}

// BlockPrefixes lists what the export table holds: the prefixes of every block the node
// owns, and the host prefixes (/32, /128) of its fixed addresses in blocks it does not
// own (another node's, or none's: fixed.go).
func (n *Node) BlockPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, b := range n.Blocks() {
		out = append(out, b.Prefixes...)
	}
	return append(out, n.ForeignPrefixes()...)
}

// ForeignPrefixes are the host prefixes of the node's addresses in blocks it does not
// own: fixed addresses the node exports one by one.
func (n *Node) ForeignPrefixes() []netip.Prefix {
	n.mu.Lock()
	defer n.mu.Unlock()
	me := n.me()
	var out []netip.Prefix
	for ref, u := range me.Use {
		if u.InUse == 0 || n.ownsBlock(ref.Pool, ref.Index) {
			continue
		}
		for _, a := range me.Attached {
			if a.Pool == ref.Pool && a.Block == ref.Index {
				out = append(out, hostPrefixes(a.Addrs)...)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr().Less(out[j].Addr()) })
	return out
}

// Attachments lists the node's attachments, sorted by container ID and interface.
func (n *Node) Attachments() []Assignment {
	n.mu.Lock()
	defer n.mu.Unlock()
	me := n.me()
	out := make([]Assignment, 0, len(me.Attached))
	for k, a := range me.Attached {
		out = append(out, *n.assignmentOf(k, a))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ContainerID != out[j].ContainerID {
			return out[i].ContainerID < out[j].ContainerID
		}
		return out[i].IfName < out[j].IfName
	})
	return out
}

// Lookup returns the assignment of an attachment.
func (n *Node) Lookup(containerID, ifName string) (*Assignment, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	key := projection.AttachKey{ContainerID: containerID, IfName: ifName}
	a, ok := n.me().Attached[key]
	if !ok {
		return nil, false
	}
	return n.assignmentOf(key, a), true
}

// Registration returns the lease of the node's last NodeRegistered event in the state
// (0 if it never registered) and the node stream's head sequence.
func (n *Node) Registration() (lease int64, head uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.me().Lease, n.st.Head(n.stream()).Seq
}

// HasPool reports whether a pool exists.
func (n *Node) HasPool(name string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.st.Cluster.Pools[name]
	return ok
}

// PoolHasIPv6 reports whether a pool exists and whether it has an IPv6 subnet (its pods
// get an IPv6 address).
func (n *Node) PoolHasIPv6(name string) (ipv6, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.st.Cluster.Pools[name]
	if !ok {
		return false, false
	}
	for _, s := range p.Subnets {
		if s.IPv6.IsValid() {
			return true, true
		}
	}
	return false, true
}

// StateHash is the hash of the node's whole projected state.
func (n *Node) StateHash() (events.Hash, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st.Hash()
}

// Head returns the node's position in a stream it follows.
func (n *Node) Head(stream events.Stream) events.Version {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st.Head(stream)
}

// PoolUsage is how many of a pool's blocks are owned (by any node) out of how many exist.
type PoolUsage struct {
	Used, Total uint64
}

// PoolUsage returns the block usage of every pool, as this node's projection sees it:
// exact for a pool whose blocks are in its pool stream (the node follows every pool
// stream); for a split pool, the blocks of its own and those of others it has seen
// (when it took blocks, or read the pool's block streams because they were running
// out): a lower bound.
func (n *Node) PoolUsage() map[string]PoolUsage {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]PoolUsage{}
	for name, pool := range n.st.Cluster.Pools {
		owners := n.st.PoolOwners(name)
		for ref := range n.me().Blocks {
			if ref.Pool == name {
				owners[ref.Index] = projection.Owner{Node: n.cfg.Node}
			}
		}
		out[name] = PoolUsage{Total: pool.NumBlocks(), Used: uint64(len(owners))}
	}
	return out
}
