package logio

import (
	"context"
	"io"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// Verifier checks files and the live log, one after the other, as one chain per stream:
// a stream's events in a later file (or the live log) must continue where the earlier
// files left it (an archive, then the next archive, then the live log). A fresh
// Verifier checks the first file or live log alone. Not safe for concurrent use.
type Verifier struct {
	// Progress, if set, is told the events checked.
	Progress Progress
	known    map[events.Stream]events.Version
}

// Report sums up what was verified.
type Report struct {
	Streams  int   `json:"streams"`
	Events   int64 `json:"events"`
	Revision int64 `json:"revision,omitempty"`
}

// NewVerifier returns a Verifier that knows nothing yet.
func NewVerifier() *Verifier { return &Verifier{known: map[events.Stream]events.Version{}} }

// Known returns the last event verified of each stream so far.
func (v *Verifier) Known() map[events.Stream]events.Version { return v.known }

// streamCheck follows one stream through a file or the live log.
type streamCheck struct {
	stream events.Stream
	chain  events.Chain
	known  events.Version // from earlier files; zero: none
	first  bool
	n      int64
}

func (v *Verifier) begin(s events.Stream) *streamCheck {
	c := &streamCheck{stream: s, chain: events.Chain{Stream: s}, first: true}
	c.known = v.known[s]
	return c
}

// next checks one event of the stream (already decoded, its hash checked).
func (c *streamCheck) next(e *events.Event) error {
	if c.first {
		c.first = false
		switch {
		case c.known.Seq > 0 && e.Seq == c.known.Seq+1:
			c.chain.Expect(c.known)
		case c.known.Seq > 0 && e.Seq > c.known.Seq+1:
			return brokenf(c.stream, c.known.Seq+1, "missing: the previous part ends at #%d, this one starts at #%d", c.known.Seq, e.Seq)
		case c.known.Seq > 0:
			// Overlaps what came before: checked at known.Seq below.
		case e.Seq == 1:
			c.chain.Expect(events.Version{})
		default:
			if _, ok := e.Payload.(*events.Snapshot); !ok {
				return brokenf(c.stream, e.Seq, "the stream starts at #%d with %s, not a snapshot (events before it are missing)", e.Seq, e.Type())
			}
		}
	}
	if err := c.chain.Next(e); err != nil {
		return broken(c.stream, e.Seq, err)
	}
	if e.Seq == c.known.Seq && e.Hash != c.known.Hash {
		return brokenf(c.stream, e.Seq, "hash %s differs from the previous part's %s", e.Hash, c.known.Hash)
	}
	c.n++
	return nil
}

// File verifies a file: its header, every event's hash (the JSON re-encodes to the
// bytes the hash was taken of), the chain and sequence of each stream, and that each
// stream's range matches the header; streams seen in earlier files must continue.
// It returns the header; on a broken file the error matches ErrBroken.
func (v *Verifier) File(ctx context.Context, r io.Reader) (Header, error) {
	return v.file(ctx, r, nil, nil)
}

// file is File calling check with the header before the events and each with every
// event (and its stored bytes) once it verified.
func (v *Verifier) file(ctx context.Context, r io.Reader, check func(*Header) error, each func(*events.Event, []byte) error) (Header, error) {
	lr := newLineReader(r)
	h, err := readHeader(lr)
	if err != nil {
		return Header{}, err
	}
	if check != nil {
		if err = check(&h); err != nil {
			return h, err
		}
	}
	total := h.Total()
	var done int64
	var cur *streamCheck
	seen := map[events.Stream]bool{}
	finish := func() error {
		if cur == nil {
			return nil
		}
		want := h.Streams[cur.stream]
		last := cur.chain.Head()
		if last.Seq != want.Last || last.Hash != want.LastHash {
			return brokenf(cur.stream, last.Seq+1, "the file's events end at #%d (%s), its header says #%d (%s): truncated?",
				last.Seq, last.Hash, want.Last, want.LastHash)
		}
		v.known[cur.stream] = last
		cur = nil
		return nil
	}
	err = decodeEvents(ctx, lr, func(line int64, e *events.Event, value []byte, derr error) error {
		if derr != nil {
			if e.Stream == "" {
				return errors.Mark(errors.Wrapf(derr, "line %d", line), ErrBroken)
			}
			return broken(e.Stream, e.Seq, derr)
		}
		if cur == nil || e.Stream != cur.stream {
			if ferr := finish(); ferr != nil {
				return ferr
			}
			want, ok := h.Streams[e.Stream]
			if !ok {
				return brokenf(e.Stream, e.Seq, "line %d: stream not in the header", line)
			}
			if seen[e.Stream] {
				return brokenf(e.Stream, e.Seq, "line %d: the stream's events are not together", line)
			}
			if e.Seq != want.First {
				return brokenf(e.Stream, e.Seq, "line %d: the header says the stream starts at #%d", line, want.First)
			}
			seen[e.Stream] = true
			cur = v.begin(e.Stream)
		}
		if ferr := cur.next(e); ferr != nil {
			return ferr
		}
		if e.Seq == h.Streams[e.Stream].Snapshot {
			if _, ok := e.Payload.(*events.Snapshot); !ok {
				return brokenf(e.Stream, e.Seq, "the header's snapshot pointer names a %s event", e.Type())
			}
		}
		if each != nil {
			if ferr := each(e, value); ferr != nil {
				return ferr
			}
		}
		done++
		if done%progressEvery == 0 {
			v.Progress.report(done, total)
		}
		return nil
	})
	if err != nil {
		return h, err
	}
	if err := finish(); err != nil {
		return h, err
	}
	for _, s := range h.SortedStreams() {
		if !seen[s] {
			r := h.Streams[s]
			return h, brokenf(s, r.First, "in the header but no event in the file: truncated?")
		}
	}
	v.Progress.report(done, total)
	return h, nil
}

// Live verifies the live log at one revision: for every stream, from its oldest stored
// event (1, or a snapshot whose older events were archived) to its head, the hash of
// every stored value, the chain, dense sequences, that the head key names the last
// event, and that the snapshot pointer names a stored Snapshot; and that no event key lies
// outside the streams' ranges. Streams seen in earlier files must continue into it.
func (v *Verifier) Live(ctx context.Context, log events.Store) (Report, error) {
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		return Report{}, errors.Wrap(err, "list streams")
	}
	rep := Report{Streams: len(heads), Revision: rev}
	type span struct{ first, snap uint64 }
	spans := make(map[events.Stream]span, len(heads))
	var total int64
	for s, h := range heads {
		first, _, serr := log.OldestStored(ctx, s, rev)
		if serr != nil {
			return rep, errors.Wrapf(serr, "oldest event of %s", s)
		}
		snap, _, serr := log.SnapshotSeq(ctx, s, rev)
		if serr != nil {
			return rep, errors.Wrapf(serr, "snapshot pointer of %s", s)
		}
		if first == 0 {
			return rep, brokenf(s, h.Seq, "the head names #%d but no event of the stream is stored", h.Seq)
		}
		if snap > 0 && (snap < first || snap > h.Seq) {
			return rep, brokenf(s, snap, "the snapshot pointer names #%d, outside the stored #%d-#%d", snap, first, h.Seq)
		}
		spans[s] = span{first, snap}
		total += int64(h.Seq - first + 1)
	}
	for s := range v.known {
		if _, ok := heads[s]; !ok {
			return rep, brokenf(s, v.known[s].Seq+1, "in the files but not in the live log")
		}
	}
	cnt, err := log.Count(ctx, rev)
	if err != nil {
		return rep, errors.Wrap(err, "count event keys")
	}
	if cnt.Events != total {
		return rep, errors.Mark(errors.Newf("chain broken: %d event keys stored, the streams' ranges hold %d (stray or missing keys)", cnt.Events, total), ErrBroken)
	}
	for _, s := range sortedStreams(heads) {
		sp := spans[s]
		c := v.begin(s)
		next := sp.first
		_, err := log.Read(ctx, s, sp.first, rev, func(e *events.Event) error {
			if err := c.next(e); err != nil {
				return err
			}
			if e.Seq == sp.snap {
				if _, ok := e.Payload.(*events.Snapshot); !ok {
					return brokenf(s, e.Seq, "the snapshot pointer names a %s event", e.Type())
				}
			}
			next = e.Seq + 1
			rep.Events++
			if rep.Events%progressEvery == 0 {
				v.Progress.report(rep.Events, total)
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, ErrBroken) {
				return rep, err
			}
			if errors.Is(err, events.ErrChainBroken) || errors.Is(err, events.ErrCorrupt) ||
				errors.Is(err, events.ErrUnknownType) || errors.Is(err, events.ErrFutureSchema) || errors.Is(err, events.ErrCompacted) {
				return rep, broken(s, next, err)
			}
			return rep, errors.Wrapf(err, "read %s at revision %d", s, rev)
		}
		v.known[s] = c.chain.Head()
	}
	v.Progress.report(rep.Events, total)
	return rep, nil
}

func sortedStreams(heads map[events.Stream]events.Version) []events.Stream {
	h := Header{Streams: make(map[events.Stream]StreamRange, len(heads))}
	for s := range heads {
		h.Streams[s] = StreamRange{}
	}
	return h.SortedStreams()
}
