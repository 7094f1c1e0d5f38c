package events

import (
	"context"
	"strconv"
)

// Version is a stream's head: the last sequence written and that event's hash.
// The zero Version is the head of an empty stream.
type Version struct {
	Seq  uint64
	Hash Hash
}

// Condition fences an append on a leased key (see docs/design.md, "Fencing"):
// with Absent false the key must exist and be attached to Lease (the writer's own
// liveness key); with Absent true the key must not exist (the node being reclaimed
// is gone). A failed condition makes Append return ErrFenced.
type Condition struct {
	Key    string
	Lease  int64
	Absent bool
}

// AppendRequest appends Events to Stream if its head is still Expected.
type AppendRequest struct {
	Stream   Stream
	Expected Version
	// Events carry Payload, Time and Actor; the log sets Schema, Stream, Seq and Prev.
	Events     []*Event
	Conditions []Condition
	// Guards are other streams whose heads must still be at the given versions (for
	// decisions that read one stream and write another, e.g. deleting a pool only while
	// its block stream is empty). A moved guard returns ErrConflict naming that stream.
	Guards []Guard
	// NoNodeStartedSince, when non-zero, is a store revision: the append fails with
	// ErrConflict if any liveness key (Keys.Alive) was created after it, i.e. a coild
	// started or took a new lease since the writer listed the live nodes at that
	// revision. Raising the cluster level uses it (a coild of an older release starting
	// meanwhile aborts the raise). The in-memory log has no liveness keys and ignores it.
	NoNodeStartedSince int64
	// RangeGuards pin whole sets of streams: none of the streams whose names start with
	// Prefix may have moved (or been created) after store revision Rev, the revision the
	// writer read them at (deleting a pool reads every block stream of the pool). A moved
	// one returns ErrConflict naming it.
	RangeGuards []RangeGuard
	// Parts are more streams written in the same transaction, all or nothing, each with
	// its own expected head (a node taking a block appends to the block's stream and to
	// its own). A part whose head moved returns ErrConflict naming that stream. Streams
	// must be distinct; the limits of MaxBatch and MaxBatchBytes apply to all the events
	// and heads together (see MaxOps).
	Parts []Part
}

// Part is one more stream an append writes (AppendRequest.Parts).
type Part struct {
	Stream   Stream
	Expected Version
	Events   []*Event
}

// RangeGuard pins the streams under a prefix (AppendRequest.RangeGuards).
type RangeGuard struct {
	Prefix string
	Rev    int64
}

// MaxOps is how many writes one append may make: every event, plus each stream's head
// and, for a stream whose events include a Snapshot, its snapshot pointer (etcd's limit
// of operations per transaction).
const MaxOps = maxTxnOps

// Guard pins another stream's head for an append.
type Guard struct {
	Stream  Stream
	Version Version
}

// MaxBatch is the most events one append may carry: etcd allows 128 operations per
// transaction and an append also writes the stream's head.
const MaxBatch = 127

// MaxBatchBytes bounds an append's encoded size (etcd's default request limit is 1.5 MiB).
const MaxBatchBytes = 1 << 20

// Log is the append-only event log.
type Log interface {
	// Append writes the events of req (and of its Parts) in one transaction and returns
	// the new head of req.Stream.
	// It returns ErrConflict (wrapped, with the current head in a *ConflictError) when the
	// stream's head is not req.Expected, ErrFenced when a condition fails, ErrTooLarge for
	// a batch over MaxBatch events or MaxBatchBytes (or MaxBatch events and a Snapshot:
	// a batch holding a Snapshot event also moves the stream's snapshot pointer; more than
	// MaxOps writes with the parts). On return the events (of every part) carry their
	// Stream, Seq, Prev, Hash and Revision. Nothing is written on error.
	Append(ctx context.Context, req AppendRequest) (Version, error)

	// Head returns the stream's head (zero for an empty or unknown stream) and the
	// store revision it was read at.
	Head(ctx context.Context, stream Stream) (Version, int64, error)

	// Read calls fn for each event of stream with sequence >= from, in order, as of the
	// store revision rev (0: the latest), and returns the revision read at. Events are
	// decoded (ErrUnknownType, ErrFutureSchema, ErrCorrupt stop the read) and their hash
	// chain checked from the first event read (ErrChainBroken). Reading events that were
	// archived away returns ErrCompacted.
	Read(ctx context.Context, stream Stream, from uint64, rev int64, fn func(*Event) error) (int64, error)

	// Streams lists the streams whose name starts with prefix ("" for all) with their
	// heads, as of rev (0: latest), and returns the revision read at.
	Streams(ctx context.Context, prefix string, rev int64) (map[Stream]Version, int64, error)

	// ReadPrefix calls fn for every event of every stream whose name starts with prefix,
	// as of rev (0: the latest), stream after stream in key order, and returns the
	// revision read at: Read of each of them, in far fewer requests when they are many
	// and short (a pool's block streams). Each stream is read from its oldest stored
	// event (#1, or the Snapshot where an archive cut it: ErrCompacted otherwise) and
	// chain-checked up to its head.
	ReadPrefix(ctx context.Context, prefix string, rev int64, fn func(*Event) error) (int64, error)

	// Watch delivers events of the streams whose names start with one of prefixes,
	// committed after revision fromRev, in revision order (with PerStreamOrder: each
	// stream's in order, different prefixes' as they come). After[stream] is the last
	// sequence the caller already has for a stream; the watch never delivers an event at or
	// below it, and if history was compacted it re-reads from there, so nothing is missed
	// or delivered twice. The channel closes when ctx ends; a fatal error is delivered as a
	// WatchBatch with Err set, then the channel closes.
	Watch(ctx context.Context, req WatchRequest) <-chan WatchBatch

	// SnapshotSeq returns the sequence of stream's newest Snapshot event as of rev (0: the
	// latest), 0 when the stream has none (or does not exist), and the revision read at.
	// An Append whose batch holds a Snapshot event moves this pointer in the same
	// transaction. Readers that do not need the stream's history start there (see
	// ReadFrom): events before it may have been archived away.
	SnapshotSeq(ctx context.Context, stream Stream, rev int64) (uint64, int64, error)

	// Close releases the log's resources (not the etcd client it was given).
	Close() error
}

// WatchRequest says what to watch and from where.
type WatchRequest struct {
	Prefixes []string
	FromRev  int64
	After    map[Stream]uint64
	// PerStreamOrder relaxes the order to each stream's own: events of one stream still
	// come in sequence, none missed or twice, but an event of one prefix may come before
	// an older one of another (and a batch holds one prefix's events of a revision). The
	// etcd watch then need not hold an event until every prefix's watch has progressed
	// past it, which costs a progress request per event that arrives alone: for a node's
	// own appends, one per append. For readers that fold each stream on its own (a
	// projection.State: node allocators, coild); not for an audit stream.
	PerStreamOrder bool
}

// WatchBatch is a group of events committed at one revision, or a terminal error.
type WatchBatch struct {
	Events   []*Event
	Revision int64
	Err      error
}

// ConflictError carries the stream's head found by a failed append.
type ConflictError struct {
	Stream Stream
	Head   Version
	// Missed, when set, holds the events from the writer's expected head up to Head
	// (decoded and chain-checked), so the writer can catch up without reading.
	Missed []*Event
}

func (e *ConflictError) Error() string {
	return "stream " + string(e.Stream) + " moved on (head now at " + strconv.FormatUint(e.Head.Seq, 10) + ")"
}
