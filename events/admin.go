package events

import (
	"context"

	"github.com/cockroachdb/errors"
)

// Store is a Log with the administrative operations of the tools that move, trim and
// index whole logs: package logio (export, import, archive, verify) and package logindex
// (the attachment index). They live here, beside Append and Read, so that no package but
// events knows a key or a transaction. EtcdLog and MemLog implement Store; the
// conformance suite (eventstest.RunStore) covers both.
type Store interface {
	Log
	// Prefix is the key prefix the log lives under (recorded in export headers).
	Prefix() string
	// OldestStored returns the oldest event of stream still stored at rev: 1, a
	// snapshot's sequence once the events before it were trimmed, 0 for an empty stream.
	OldestStored(ctx context.Context, stream Stream, rev int64) (uint64, int64, error)
	// ReadRange reads events first..last of stream at rev (a revision, not 0); see
	// EtcdLog.ReadRange.
	ReadRange(ctx context.Context, stream Stream, first, last uint64, rev int64, prev *Version, fn func(*Event) error) (Version, error)
	// LiveNodes lists the nodes whose liveness key exists; see EtcdLog.LiveNodes.
	LiveNodes(ctx context.Context, ttl bool) ([]LiveNode, int64, error)

	// Count counts the log's stored keys at rev (0: the latest).
	Count(ctx context.Context, rev int64) (Counts, error)
	// Clear deletes the attachment index and, with log, every event, head and snapshot
	// pointer, all in one step and only if g holds (ErrNodeStarted otherwise).
	Clear(ctx context.Context, log bool, g BulkGuard) error
	// PutEvents stores events as they are (bulk load into an empty log, before
	// InitHeads): no head moves, no chain is checked, at most MaxBatch per call. A
	// reader sees them only once their stream has a head.
	PutEvents(ctx context.Context, evs []StoredEvent) error
	// InitHeads writes the head (and snapshot pointer) of streams that have none, in
	// steps of up to 60 streams, each only if g holds (ErrNodeStarted) and none of its
	// streams has a head yet (ErrConflict).
	InitHeads(ctx context.Context, heads []StreamInit, g BulkGuard) error
	// Trim deletes events from..to-1 of stream, which lie below the snapshot event keep,
	// only if keep is still the event stored at keepRev (its revision); otherwise it
	// deletes nothing and returns ErrConflict. It returns how many events it deleted.
	Trim(ctx context.Context, stream Stream, from, to, keep uint64, keepRev int64) (int64, error)
	// StoredValues returns the stored bytes of events seqs of stream at rev (a
	// revision, not 0), nil for an event not stored, in the order of seqs.
	StoredValues(ctx context.Context, stream Stream, seqs []uint64, rev int64) ([][]byte, error)

	// IndexEntries returns the attachment-index entries of stream (every stream's when
	// stream is "") stored at rev (0: the latest), in key order: by stream, then first.
	// With keysOnly the values are left out.
	IndexEntries(ctx context.Context, stream Stream, rev int64, keysOnly bool) ([]IndexValue, error)
	// PutIndex stores the entry of stream starting at first unless one exists; ok is
	// false when it did.
	PutIndex(ctx context.Context, stream Stream, first uint64, value []byte) (ok bool, err error)
	// DeleteIndex deletes the entries of stream starting at firsts, every entry of stream
	// when firsts is nil, or the whole index when stream is "" too, and returns how many
	// it deleted.
	DeleteIndex(ctx context.Context, stream Stream, firsts []uint64) (int64, error)
}

var (
	_ Store = (*EtcdLog)(nil)
	_ Store = (*MemLog)(nil)
)

// ErrNodeStarted: a BulkGuard failed: a node's liveness key was created after the guard's
// revision (a coild started, or took a new lease, meanwhile).
var ErrNodeStarted = errors.New("events: a node started since the guard's revision")

// BulkGuard conditions a Store's bulk writes. The zero BulkGuard always holds.
type BulkGuard struct {
	// NoNodeStartedAfter, when set, holds while no liveness key under the log's prefix
	// was created after this revision (LiveNodes read at it found none, or those named).
	NoNodeStartedAfter int64
}

// Counts is what Count found.
type Counts struct {
	Events    int64 `json:"events"`
	Streams   int64 `json:"streams"`   // heads
	Snapshots int64 `json:"snapshots"` // snapshot pointers
	Index     int64 `json:"index"`     // attachment-index entries
}

// StoredEvent is an event in its stored form (Encode's bytes), for PutEvents.
type StoredEvent struct {
	Stream Stream
	Seq    uint64
	Value  []byte
}

// StreamInit is a stream's head and snapshot pointer (0: none), for InitHeads.
type StreamInit struct {
	Stream   Stream
	Head     Version
	Snapshot uint64
}

// IndexValue is one stored attachment-index entry.
type IndexValue struct {
	Stream Stream
	First  uint64
	Value  []byte
}

// initHeadsStep is how many streams one InitHeads step writes (a head and a snapshot
// pointer each, and a compare per stream, within maxTxnOps).
const initHeadsStep = 60

func checkStoredEvents(evs []StoredEvent) error {
	if len(evs) > MaxBatch {
		return errors.Wrapf(ErrTooLarge, "%d events in one PutEvents (at most %d)", len(evs), MaxBatch)
	}
	for _, e := range evs {
		if err := e.Stream.Validate(); err != nil {
			return err
		}
		if err := checkSeq(e.Stream, e.Seq); err != nil {
			return err
		}
		if e.Seq == 0 {
			return errors.Newf("events: put %s #0", e.Stream)
		}
	}
	return nil
}

func checkInits(heads []StreamInit) error {
	for _, h := range heads {
		if err := h.Stream.Validate(); err != nil {
			return err
		}
		if h.Head.Seq == 0 || h.Snapshot > h.Head.Seq {
			return errors.Newf("events: init head of %s: head #%d, snapshot #%d", h.Stream, h.Head.Seq, h.Snapshot)
		}
	}
	return nil
}

// checkTrim checks a Trim's arguments: a valid stream and from < to <= keep, from at least 1.
func checkTrim(stream Stream, from, to, keep uint64) error {
	if err := stream.Validate(); err != nil {
		return err
	}
	if from == 0 || to <= from || keep < to {
		return errors.Newf("events: trim %s #%d-#%d below #%d", stream, from, to, keep)
	}
	return nil
}
