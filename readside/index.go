package readside

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
	"github.com/coil-net/coil/logio"
)

// Index is the attachment index (package logindex) of the log in Store, which History
// and ReadEvents use to read only the chunks of a node stream that may mention a pod or
// a container. A nil *Index reads every stream in full. It counts the indexed chunks it
// read and skipped (Chunks); one Index may serve concurrent queries.
type Index struct {
	Store events.Store
	// Timeout bounds the load of the index and each stream's indexed read, as a
	// caller's per-request timeout bounds the log's calls (0: no bound).
	Timeout time.Duration

	chunksRead, chunksSkipped atomic.Int64
}

// Chunks returns how many indexed chunks the queries read, and how many they skipped.
func (ix *Index) Chunks() (read, skipped int64) {
	return ix.chunksRead.Load(), ix.chunksSkipped.Load()
}

func (ix *Index) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if ix.Timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, ix.Timeout)
}

// load returns the index entries of every node stream as stored at rev (one range read,
// bounded by ix.Timeout; logindex.Load).
func (ix *Index) load(ctx context.Context, rev int64) (map[events.Stream][]*logindex.Entry, error) {
	ctx, cancel := ix.bound(ctx)
	defer cancel()
	entries, err := logindex.Load(ctx, ix.Store, "", rev)
	if err != nil {
		return nil, errors.Wrapf(err, "load the attachment index at revision %d", rev)
	}
	return entries, nil
}

// chunkRead is what Index.read does with one stream.
type chunkRead struct {
	// want reports whether an indexed chunk must be read; it may change its answer as
	// visit sees events (pairing.wants).
	want func(*logindex.Entry) bool
	// visit is fed the events read, in sequence order.
	visit func(*events.Event) error
	// full reads the stream without the index (feeding visit), as the caller would.
	full func(ctx context.Context) error
}

// read feeds r.visit the events of stream s (head at rev) that r.want may need and that
// the archives (nil: none) do not hold (from #1, or after the archives' last event, the
// join checked by joinLive): entries are the stream's index entries; with none (or ix
// nil), it is r.full. Entries that no longer match the log, or that start before the live
// read, are ignored (logindex.Verify, logindex.Segments). A stream whose event #1 is
// archived and in no archive given is read by r.full (which fails as the full read
// does). Otherwise one forward pass over the segments reads a chunk iff r.want accepts
// its entry, and reads every unindexed range (chunks missing anywhere, the tail after the
// last entry). The hash chain is checked within each read and across the skipped chunks
// through their entries' hashes, up to the head.
func (ix *Index) read(ctx context.Context, log events.Log, s events.Stream, head events.Version, rev int64,
	entries []*logindex.Entry, arch *logio.Archives, r chunkRead) error {
	if ix == nil || len(entries) == 0 {
		return r.full(ctx)
	}
	ctx, cancel := ix.bound(ctx)
	defer cancel()
	from, err := joinLive(ctx, log, s, head, rev, arch)
	if err != nil || from == 0 {
		return err
	}
	valid, hasFirst, err := logindex.Verify(ctx, ix.Store, s, entries, rev)
	if err != nil {
		return err
	}
	if (from == 1 && !hasFirst) || len(valid) == 0 {
		return r.full(ctx)
	}
	last := arch.Last(s) // the version of the event before the next segment
	for _, seg := range logindex.Segments(valid, from, head.Seq) {
		if e := seg.Entry; e != nil && !r.want(e) {
			ix.chunksSkipped.Add(1)
			last = events.Version{Seq: e.Last, Hash: e.Hash}
			continue
		}
		if seg.Entry != nil {
			ix.chunksRead.Add(1)
		}
		prev := &last
		if seg.First == 1 {
			prev = nil
		}
		if last, err = ix.Store.ReadRange(ctx, s, seg.First, seg.Last, rev, prev, r.visit); err != nil {
			return errors.Wrapf(err, "read %s #%d-#%d at revision %d", s, seg.First, seg.Last, rev)
		}
	}
	if last != head {
		return errors.Wrapf(events.ErrChainBroken, "%s: head is #%d %s but the read ended at #%d %s",
			s, head.Seq, head.Hash, last.Seq, last.Hash)
	}
	return nil
}
