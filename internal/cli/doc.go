// Package cli implements coilctl, Coil's operator command line: pools (create, add a
// subnet, list, show, delete), the event log, addresses, blocks and nodes (list, reclaim).
//
// Every read replays the log at one etcd revision (readside.Load), so a listing is one
// consistent picture; history, state, diff and events hand off to package readside and
// only parse flags and print. Every write goes through allocator.Admin, which validates and
// appends with optimistic concurrency. Main returns an exit code scripts can trust (see
// the Exit* constants and docs/coilctl.md). There is no package-level configuration: the
// command tree is built from an Env per call, so tests run it in-process.
package cli
