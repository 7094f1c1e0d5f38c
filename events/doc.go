// Package events defines Coil's event log: the envelope, every event type, the canonical
// binary encoding with its per-stream hash chain, and the Log interface with two
// implementations (etcd and in-memory) that pass one conformance suite (package eventstest).
//
// Events live in streams, each with a dense sequence 1, 2, 3...:
//
//   - "cluster": pool definitions (created, subnet added, deleted);
//   - "pool/<name>": block ownership in that pool (assigned, released, reclaimed);
//   - "node/<name>": node registration and address assignments on that node.
//
// An append succeeds only if the stream's head is still the version the writer read
// (optimistic concurrency); a lost race returns ErrConflict and the writer catches up.
//
// Event types are stable strings (never Go type names); an unknown type or a newer schema
// is a hard error (ErrUnknownType, ErrFutureSchema), never skipped: a misread allocation
// log hands out duplicate addresses.
package events
