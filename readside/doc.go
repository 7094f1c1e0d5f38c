// Package readside is Coil's read side: it folds the event log into projections and
// answers questions about the log's past. Everything that reads the log to know the
// state (coild at start, coilctl's listings and audit commands, the controller, checks)
// goes through it, so there is one replay and one definition of each query.
//
//   - Replay and Load: the projected state of streams at one revision, each stream read
//     from its newest snapshot or from #1, streams read concurrently (Parallel).
//   - StatesAt: the whole state as it was at past moments (Point: a revision or a time),
//     read at that revision while etcd still has it, else folded up to it from the
//     current log; with archive files (logio.ReadArchives) folded from them first.
//   - History: every holder of an address, or every address of a pod or container, over
//     time (Holding), narrowed by the attachment index (Index, package logindex) and the
//     block owners where it can be, with the same result as a full read.
//   - EventFilter and ReadEvents: the events a filter shows, in commit order.
//   - DiffStates: what changed between two states (Diff).
//
// The package reads; it never appends. It knows no flags and formats nothing: its
// callers parse their input and print the results (JSON field names of the result types
// are part of coilctl's -o json output). Errors wrap the log's (events.ErrCompacted,
// events.ErrUnavailable, logio.ErrArchiveGap, ...) so callers can tell them apart.
package readside
