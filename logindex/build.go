package logindex

import (
	"context"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// BuildOptions tune Build.
type BuildOptions struct {
	// ChunkSize is the number of events per entry; 0 means DefaultChunkSize. Other sizes
	// exist for tests (a few hundred events then make several chunks); entries record
	// their range, so readers work with any size, but one index should use one size.
	ChunkSize int
}

// BuildResult counts what Build found and did for one stream.
type BuildResult struct {
	Stream events.Stream `json:"stream"`
	// Head is the stream's head sequence at Revision, the revision Build read at.
	Head     uint64 `json:"head"`
	Revision int64  `json:"revision"`
	// Chunks is the number of complete chunks (head / chunk size).
	Chunks int `json:"chunks"`
	// Written entries were written by this call; Present ones existed already (or were
	// written by a concurrent builder meanwhile); Archived chunks were skipped because
	// some of their events were archived away.
	Written  int `json:"written"`
	Present  int `json:"present"`
	Archived int `json:"archived"`
	// EventsRead is the number of events read to build the written entries.
	EventsRead int64 `json:"eventsRead"`
}

// Build writes the entry of every complete chunk of stream that has none, as of the
// stream's current head (lg.Head), reading only those chunks' events (one pass per run of
// consecutive missing chunks). Chunks whose events are partly or wholly archived are
// skipped. It is idempotent and safe to run concurrently with other builders: an entry is
// written only if its key does not exist, and every builder computes the same entry.
// Existing entries are not checked (Verify tells readers whether to trust them; Delete
// and Build again replace them). A stream with no complete chunk, or unknown, writes
// nothing and returns no error.
func Build(ctx context.Context, lg events.Store, stream events.Stream, opt BuildOptions) (BuildResult, error) {
	size := uint64(opt.ChunkSize)
	if opt.ChunkSize == 0 {
		size = DefaultChunkSize
	}
	if opt.ChunkSize < 0 {
		return BuildResult{}, errors.Wrapf(ErrBadChunk, "chunk size %d", opt.ChunkSize)
	}
	res := BuildResult{Stream: stream}
	head, rev, err := lg.Head(ctx, stream)
	if err != nil {
		return res, errors.Wrapf(err, "logindex: head of %s", stream)
	}
	res.Head, res.Revision = head.Seq, rev
	res.Chunks = int(head.Seq / size)
	if res.Chunks == 0 {
		return res, nil
	}
	present := map[uint64]bool{}
	have, err := lg.IndexEntries(ctx, stream, rev, true)
	if err != nil {
		return res, errors.Wrapf(err, "logindex: list the entries of %s", stream)
	}
	for _, v := range have {
		present[v.First] = true
	}
	live, _, err := lg.OldestStored(ctx, stream, rev)
	if err != nil {
		return res, errors.Wrapf(err, "logindex: oldest event of %s", stream)
	}
	live = max(live, 1) // none stored: nothing archived either
	// Runs of consecutive missing chunks, each read in one pass.
	type run struct{ first, last uint64 }
	var runs []run
	for k := range uint64(res.Chunks) {
		first, last := k*size+1, (k+1)*size
		switch {
		case first < live:
			res.Archived++
		case present[first]:
			res.Present++
		case len(runs) > 0 && runs[len(runs)-1].last == first-1:
			runs[len(runs)-1].last = last
		default:
			runs = append(runs, run{first, last})
		}
	}
	seen := map[string]struct{}{}
	var buf []string
	for _, r := range runs {
		chunkFirst := r.first
		_, err := lg.ReadRange(ctx, stream, r.first, r.last, rev, nil, func(e *events.Event) error {
			res.EventsRead++
			buf = KeysOf(buf[:0], e.Payload)
			for _, k := range buf {
				seen[k] = struct{}{}
			}
			if e.Seq-chunkFirst+1 < size {
				return nil
			}
			ok, werr := write(ctx, lg, newEntry(stream, chunkFirst, e.Seq, e.Hash, seen))
			if werr != nil {
				return werr
			}
			if ok {
				res.Written++
			} else {
				res.Present++
			}
			clear(seen)
			chunkFirst = e.Seq + 1
			return nil
		})
		if err != nil {
			return res, errors.Wrapf(err, "logindex: build %s #%d-#%d", stream, r.first, r.last)
		}
	}
	return res, nil
}

// write stores e unless its key exists; ok is false when it did.
func write(ctx context.Context, lg events.Store, e *Entry) (bool, error) {
	v, err := e.Encode()
	if err != nil {
		return false, err
	}
	ok, err := lg.PutIndex(ctx, e.Stream, e.First, v)
	return ok, errors.Wrapf(err, "logindex: write the entry of %s #%d", e.Stream, e.First)
}

// Delete deletes the index entries of stream, or the whole index when stream is "", and
// returns how many it deleted. Deleting nothing is not an error.
func Delete(ctx context.Context, lg events.Store, stream events.Stream) (int64, error) {
	n, err := lg.DeleteIndex(ctx, stream, nil)
	return n, errors.Wrapf(err, "logindex: delete the entries of %q", stream)
}

// DeleteThrough deletes the entries of stream whose last sequence is at or below seq
// (chunks wholly archived up to seq), and returns how many it deleted. Entries that do not
// decode are deleted too when their first sequence is at or below seq.
func DeleteThrough(ctx context.Context, lg events.Store, stream events.Stream, seq uint64) (int64, error) {
	vals, err := lg.IndexEntries(ctx, stream, 0, false)
	if err != nil {
		return 0, errors.Wrapf(err, "logindex: list the entries of %s", stream)
	}
	var firsts []uint64
	for _, v := range vals {
		if v.First > seq {
			continue
		}
		if e, derr := Decode(stream, v.Value); derr == nil && e.Last > seq {
			continue
		}
		firsts = append(firsts, v.First)
	}
	if len(firsts) == 0 {
		return 0, nil
	}
	n, err := lg.DeleteIndex(ctx, stream, firsts)
	return n, errors.Wrapf(err, "logindex: delete the entries of %s through #%d", stream, seq)
}
