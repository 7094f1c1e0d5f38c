package allocator

// Queued returns the number of requests waiting for the committer.
func (n *Node) Queued() int { return len(n.ops) }

// Usable runs the check an ADD makes on its pool (enabled, node selector), as the
// committer does.
func (n *Node) Usable(pool string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.usable(n.st.Cluster.Pools[pool])
}
