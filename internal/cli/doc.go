// Package cli implements coilctl, Coil's operator command line: pools (create, add a
// subnet, list, show, delete), the event log, addresses, blocks and nodes (list, reclaim).
//
// Every read replays the log at one etcd revision into a projection.State, so a listing
// is one consistent picture. Every write goes through allocator.Admin, which validates and
// appends with optimistic concurrency. Main returns an exit code scripts can trust (see
// the Exit* constants and docs/coilctl.md). There is no package-level configuration: the
// command tree is built from an Env per call, so tests run it in-process.
package cli
