package logindex

import (
	"context"
	"sort"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// Load returns the index entries of stream, or of every node stream when stream is "",
// as stored at revision rev (0: the latest), in one read (events.Store.IndexEntries),
// each stream's sorted by first sequence. Entries that do not decode are left out (they
// only mean "read these events"); nothing stored returns an empty map.
func Load(ctx context.Context, st events.Store, stream events.Stream, rev int64) (map[events.Stream][]*Entry, error) {
	vals, err := st.IndexEntries(ctx, stream, rev, false)
	if err != nil {
		return nil, errors.Wrapf(err, "logindex: load the entries of %q at revision %d", stream, rev)
	}
	out := map[events.Stream][]*Entry{}
	for _, v := range vals {
		if kind, _ := v.Stream.Kind(); kind != "node" {
			continue
		}
		e, derr := Decode(v.Stream, v.Value)
		if derr != nil || e.First != v.First {
			continue
		}
		out[v.Stream] = append(out[v.Stream], e)
	}
	for _, es := range out {
		sort.Slice(es, func(i, j int) bool { return es[i].First < es[j].First })
	}
	return out, nil
}

// Verify returns the entries of stream whose Hash is the hash of the event stored at
// their Last at revision rev (the entries still describe this log), in their order, and
// whether the stream's event #1 is stored (false: its early events were archived). It
// reads those events with point reads (events.Store.StoredValues).
func Verify(ctx context.Context, st events.Store, stream events.Stream, entries []*Entry, rev int64) ([]*Entry, bool, error) {
	seqs := make([]uint64, 0, len(entries)+1)
	seqs = append(seqs, 1)
	for _, e := range entries {
		seqs = append(seqs, e.Last)
	}
	vals, err := st.StoredValues(ctx, stream, seqs, rev)
	if err != nil {
		return nil, false, errors.Wrapf(err, "logindex: verify the entries of %s at revision %d", stream, rev)
	}
	hasFirst := vals[0] != nil
	var ok []*Entry
	for i, e := range entries {
		if v := vals[i+1]; v != nil && events.HashOf(stream, e.Last, v) == e.Hash {
			ok = append(ok, e)
		}
	}
	return ok, hasFirst, nil
}

// Segment is a range of a stream's sequences: covered by an index entry, or not indexed
// (Entry nil: its events must be read).
type Segment struct {
	First, Last uint64
	Entry       *Entry
}

// Segments cuts [from, head] into segments: each entry (sorted by First) that lies
// within it and starts after the previous segment becomes one, and every gap between
// them (missing chunks, entries that overlap an earlier one, the tail after the last
// entry) an unindexed segment. Entries outside [from, head] are ignored. The segments are
// in sequence order and cover [from, head] exactly.
func Segments(entries []*Entry, from, head uint64) []Segment {
	var out []Segment
	next := max(from, 1)
	for _, e := range entries {
		if e.First < next || e.Last > head {
			continue
		}
		if e.First > next {
			out = append(out, Segment{First: next, Last: e.First - 1})
		}
		out = append(out, Segment{First: e.First, Last: e.Last, Entry: e})
		next = e.Last + 1
	}
	if next <= head {
		out = append(out, Segment{First: next, Last: head})
	}
	return out
}
