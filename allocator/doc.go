// Package allocator decides pool, block and address assignments and commits them as
// events. Decisions are made against a projection (package projection) and appended with
// optimistic concurrency; a lost race is caught up and decided again.
//
//   - Admin: pool definitions on the "cluster" stream (create, add subnet, delete),
//     validated and checked for overlap against every other pool, race-free because all
//     of them go through that one stream.
//   - Node: a node's allocator. Concurrent requests are batched into one append (group
//     commit); blocks are taken from pool streams (lowest free index, bounded jittered
//     retry); every append is fenced on the node's lease.
//   - Reclaim: takes a dead node's blocks back, only when its lease is gone.
package allocator
