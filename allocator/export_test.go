package allocator

// Queued returns the number of requests waiting for the committer.
func (n *Node) Queued() int { return len(n.ops) }
