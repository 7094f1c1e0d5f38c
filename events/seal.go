package events

import (
	"github.com/cockroachdb/errors"
)

// Sealed is an event ready to store: its key sequence and encoded value.
type Sealed struct {
	Seq   uint64
	Value []byte
}

// Seal fills in the envelope of each event of req (Schema, Stream, Seq, Prev, Hash),
// encodes them, and returns the stored values and the new head. Both Log implementations
// append through it, so the chain is built the same way everywhere.
func Seal(req *AppendRequest) ([]Sealed, Version, error) {
	if err := req.Stream.Validate(); err != nil {
		return nil, Version{}, err
	}
	if len(req.Events) == 0 {
		return nil, req.Expected, errors.New("events: append of no events")
	}
	if len(req.Events) > MaxBatch {
		return nil, Version{}, errors.Wrapf(ErrTooLarge, "%d events (at most %d per append)", len(req.Events), MaxBatch)
	}
	out := make([]Sealed, len(req.Events))
	head := req.Expected
	size := 0
	for i, e := range req.Events {
		e.Schema = SchemaVersion
		e.Stream = req.Stream
		e.Seq = head.Seq + 1
		e.Prev = head.Hash
		v, err := Encode(e)
		if err != nil {
			return nil, Version{}, errors.Wrapf(err, "%s #%d", req.Stream, e.Seq)
		}
		size += len(v)
		e.Hash = HashOf(req.Stream, e.Seq, v)
		out[i] = Sealed{Seq: e.Seq, Value: v}
		head = Version{Seq: e.Seq, Hash: e.Hash}
	}
	if size > MaxBatchBytes {
		return nil, Version{}, errors.Wrapf(ErrTooLarge, "%d bytes (at most %d per append)", size, MaxBatchBytes)
	}
	return out, head, nil
}

// Chain checks that events of one stream follow each other: dense sequence numbers and
// each event's Prev equal to its predecessor's hash. The zero Chain accepts any first event
// (a read that starts mid-stream); start it with Expect to pin the first one.
type Chain struct {
	Stream Stream
	head   Version
	primed bool
}

// Expect pins the next event to follow head.
func (c *Chain) Expect(head Version) { c.head, c.primed = head, true }

// Head is the last event accepted.
func (c *Chain) Head() Version { return c.head }

// Next checks e and advances the chain.
func (c *Chain) Next(e *Event) error {
	if c.primed {
		if e.Seq != c.head.Seq+1 {
			return errors.Wrapf(ErrChainBroken, "%s: sequence %d follows %d (gap or repeat)", e.Stream, e.Seq, c.head.Seq)
		}
		if e.Prev != c.head.Hash {
			return errors.Wrapf(ErrChainBroken, "%s #%d: previous-hash %s does not match #%d's hash %s",
				e.Stream, e.Seq, short(e.Prev), c.head.Seq, short(c.head.Hash))
		}
	} else if e.Seq == 1 && !e.Prev.IsZero() {
		return errors.Wrapf(ErrChainBroken, "%s #1: first event has a previous-hash", e.Stream)
	}
	c.head, c.primed = Version{Seq: e.Seq, Hash: e.Hash}, true
	return nil
}

// deliver is one stored event of a read: it decodes value (event seq of c's stream, put
// at revision rev), checks that the event follows the chain and hands it to fn.
func (c *Chain) deliver(dec *Decoder, seq uint64, value []byte, rev int64, fn func(*Event) error) error {
	ev, err := dec.Decode(c.Stream, seq, value)
	if err != nil {
		return err
	}
	ev.Revision = rev
	if err := c.Next(ev); err != nil {
		return err
	}
	return fn(ev)
}

func short(h Hash) string { return h.String()[:12] }

// Conflict builds the error Append returns when the head moved: it matches ErrConflict
// with errors.Is and yields the *ConflictError with errors.As.
func Conflict(stream Stream, head Version) error {
	return errors.Mark(errors.WithStack(&ConflictError{Stream: stream, Head: head}), ErrConflict)
}

// ConflictWith is Conflict carrying the events the writer missed (decoded, chain-checked,
// from its expected head up to head), so it can catch up without reading.
func ConflictWith(stream Stream, head Version, missed []*Event) error {
	return errors.Mark(errors.WithStack(&ConflictError{Stream: stream, Head: head, Missed: missed}), ErrConflict)
}

// sealedPart is one stream of an append, sealed: its events' stored values, new head and
// snapshot pointer (0: none).
type sealedPart struct {
	stream   Stream
	expected Version
	events   []*Event
	sealed   []Sealed
	head     Version
	snap     uint64
}

// sealAll seals every stream of req (req.Stream first, then req.Parts) and checks what
// both logs refuse alike: an invalid or repeated stream, a sequence beyond the key format,
// an invalid range guard, more writes than MaxOps or bytes than MaxBatchBytes.
func sealAll(req *AppendRequest) ([]sealedPart, error) {
	parts := make([]sealedPart, 0, 1+len(req.Parts))
	seen := make(map[Stream]bool, 1+len(req.Parts))
	ops, size := 0, 0
	add := func(r *AppendRequest) error {
		if seen[r.Stream] {
			return errors.Newf("events: append: stream %s given twice", r.Stream)
		}
		seen[r.Stream] = true
		sealed, head, err := Seal(r)
		if err != nil {
			if len(parts) > 0 {
				err = errors.Wrapf(err, "part %s", r.Stream)
			}
			return err
		}
		if err := checkSeq(r.Stream, head.Seq); err != nil {
			return err
		}
		p := sealedPart{stream: r.Stream, expected: r.Expected, events: r.Events, sealed: sealed, head: head, snap: lastSnapshot(r.Events)}
		ops += len(sealed) + 1
		if p.snap > 0 {
			ops++
		}
		for _, s := range sealed {
			size += len(s.Value)
		}
		parts = append(parts, p)
		return nil
	}
	if err := add(req); err != nil {
		return nil, err
	}
	for i := range req.Parts {
		pr := &AppendRequest{Stream: req.Parts[i].Stream, Expected: req.Parts[i].Expected, Events: req.Parts[i].Events}
		if err := add(pr); err != nil {
			return nil, err
		}
	}
	for _, g := range req.RangeGuards {
		if g.Prefix == "" || g.Rev <= 0 {
			return nil, errors.Newf("events: append: range guard %q at revision %d: want a prefix and a revision", g.Prefix, g.Rev)
		}
	}
	if ops > maxTxnOps {
		return nil, errors.Wrapf(ErrTooLarge, "%d writes: events, heads and snapshot pointers of %d streams (at most %d operations)", ops, len(parts), maxTxnOps)
	}
	if size > MaxBatchBytes {
		return nil, errors.Wrapf(ErrTooLarge, "%d bytes (at most %d per append)", size, MaxBatchBytes)
	}
	return parts, nil
}
