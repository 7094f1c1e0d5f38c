package eventstest

import (
	"slices"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// The Store operations (bulk load, guards, trim, the attachment index): every log the
// suite runs on must be a Store.

func (su suite) store(t *testing.T) (events.Store, Harness) {
	t.Helper()
	l, h := su.newLog(t)
	st, ok := l.(events.Store)
	if !ok {
		t.Fatalf("%T is not an events.Store", l)
	}
	return st, h
}

func storedValues(t *testing.T, st events.Store, s events.Stream, first, last uint64, rev int64) [][]byte {
	t.Helper()
	var seqs []uint64
	for q := first; q <= last; q++ {
		seqs = append(seqs, q)
	}
	vs, err := st.StoredValues(ctxT(t), s, seqs, rev)
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func counts(t *testing.T, st events.Store) events.Counts {
	t.Helper()
	c, err := st.Count(ctxT(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Events put in bulk are invisible until their stream's head is written, then read as
// the source log's; a second InitHeads is a conflict; Clear empties the log.
func (su suite) testBulkLoad(t *testing.T) {
	ctx := ctxT(t)
	src, _ := su.store(t)
	s := events.Stream("pool/bulk")
	head := appendN(t, src, s, events.Version{}, 10, 4)
	want, rev := readAll(t, src, s, 1, 0)
	vals := storedValues(t, src, s, 1, 10, rev)

	dst, _ := su.store(t)
	if c := counts(t, dst); c != (events.Counts{}) {
		t.Fatalf("fresh log counts %+v", c)
	}
	var evs []events.StoredEvent
	for i, v := range vals {
		evs = append(evs, events.StoredEvent{Stream: s, Seq: uint64(i) + 1, Value: v})
	}
	slices.Reverse(evs) // order does not matter
	if err := dst.PutEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if heads, _, err := dst.Streams(ctx, "", 0); err != nil || len(heads) != 0 {
		t.Fatalf("streams before InitHeads: %v %v", heads, err)
	}
	if err := dst.InitHeads(ctx, []events.StreamInit{{Stream: s, Head: head}}, events.BulkGuard{}); err != nil {
		t.Fatal(err)
	}
	got, _ := readAll(t, dst, s, 1, 0)
	hashes := func(evs []*events.Event) (out []events.Hash) {
		for _, e := range evs {
			out = append(out, e.Hash)
		}
		return out
	}
	if !slices.Equal(hashes(got), hashes(want)) || got[9].Hash != head.Hash {
		t.Fatalf("loaded %s\nsource %s", describe(got), describe(want))
	}
	if c := counts(t, dst); c.Events != 10 || c.Streams != 1 || c.Snapshots != 0 {
		t.Fatalf("counts %+v", c)
	}
	if err := dst.InitHeads(ctx, []events.StreamInit{{Stream: s, Head: head}}, events.BulkGuard{}); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("second InitHeads: %v, want ErrConflict", err)
	}
	if _, err := dst.Append(ctx, events.AppendRequest{Stream: s, Expected: head, Events: []*events.Event{SampleEvent(11, &events.BlockReleased{Index: 1, Node: "node-1"})}}); err != nil {
		t.Fatalf("append after the load: %+v", err)
	}
	if err := dst.Clear(ctx, true, events.BulkGuard{}); err != nil {
		t.Fatal(err)
	}
	if c := counts(t, dst); c != (events.Counts{}) {
		t.Fatalf("after Clear: %+v", c)
	}
	for _, bad := range [][]events.StoredEvent{{{Stream: "bad stream", Seq: 1}}, {{Stream: s, Seq: 0}}, make([]events.StoredEvent, events.MaxBatch+1)} {
		if err := dst.PutEvents(ctx, bad); err == nil {
			t.Fatalf("PutEvents(%d events, first %+v) accepted", len(bad), bad[0])
		}
	}
}

// A BulkGuard fails once a liveness key is created after its revision, not before.
func (su suite) testBulkGuard(t *testing.T) {
	ctx := ctxT(t)
	st, h := su.store(t)
	h.SetLeaseKey(events.AliveKey(st.Prefix(), "n1"), h.NewLease())
	live, rev, err := st.LiveNodes(ctx, false)
	if err != nil || len(live) != 1 || live[0].Node != "n1" {
		t.Fatalf("live %+v %v", live, err)
	}
	g := events.BulkGuard{NoNodeStartedAfter: rev}
	if err := st.Clear(ctx, false, g); err != nil {
		t.Fatalf("nothing started: %+v", err)
	}
	h.SetLeaseKey(events.AliveKey(st.Prefix(), "n2"), h.NewLease())
	if err := st.Clear(ctx, true, g); !errors.Is(err, events.ErrNodeStarted) {
		t.Fatalf("Clear after n2 started: %v", err)
	}
	s := events.Stream("pool/g")
	if err := st.InitHeads(ctx, []events.StreamInit{{Stream: s, Head: events.Version{Seq: 1}}}, g); !errors.Is(err, events.ErrNodeStarted) {
		t.Fatalf("InitHeads after n2 started: %v", err)
	}
	if heads, _, err := st.Streams(ctx, "", 0); err != nil || len(heads) != 0 {
		t.Fatalf("a refused InitHeads wrote %v (%v)", heads, err)
	}
}

// Trim deletes events below a kept event only while that event is the one read; the
// trimmed range then reads as archived (ErrCompacted), the rest as before.
func (su suite) testTrim(t *testing.T) {
	ctx := ctxT(t)
	st, _ := su.store(t)
	s := events.Stream("pool/trim")
	appendN(t, st, s, events.Version{}, 10, 3)
	all, _ := readAll(t, st, s, 1, 0)
	keep := all[5] // #6
	if _, err := st.Trim(ctx, s, 1, 6, 6, keep.Revision+1); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("trim with a stale keep revision: %v", err)
	}
	if first, _, err := st.OldestStored(ctx, s, 0); err != nil || first != 1 {
		t.Fatalf("oldest %d %v", first, err)
	}
	n, err := st.Trim(ctx, s, 1, 6, 6, keep.Revision)
	if err != nil || n != 5 {
		t.Fatalf("trim: %d %+v", n, err)
	}
	if first, _, oerr := st.OldestStored(ctx, s, 0); oerr != nil || first != 6 {
		t.Fatalf("oldest after trim %d %v", first, oerr)
	}
	_, rev, _ := st.Head(ctx, s)
	if _, rerr := st.ReadRange(ctx, s, 1, 5, rev, nil, func(*events.Event) error { return nil }); !errors.Is(rerr, events.ErrCompacted) {
		t.Fatalf("read of the trimmed range: %v", rerr)
	}
	prev := events.Version{Seq: 5, Hash: all[4].Hash}
	var got []*events.Event
	v, err := st.ReadRange(ctx, s, 6, 10, rev, &prev, func(e *events.Event) error { got = append(got, e); return nil })
	if err != nil || len(got) != 5 || v.Hash != all[9].Hash {
		t.Fatalf("read of the rest: %d events, %v, %+v", len(got), v, err)
	}
	vs := storedValues(t, st, s, 5, 6, rev)
	if vs[0] != nil || vs[1] == nil {
		t.Fatalf("stored values of #5, #6: %v", vs)
	}
	if c := counts(t, st); c.Events != 5 {
		t.Fatalf("counts after trim %+v", c)
	}
	for _, bad := range [][3]uint64{{0, 6, 6}, {3, 3, 6}, {1, 7, 6}} {
		if _, err := st.Trim(ctx, s, bad[0], bad[1], bad[2], keep.Revision); err == nil {
			t.Fatalf("Trim %v accepted", bad)
		}
	}
}

// Index entries: written once, listed in key order (with or without values), deleted by
// first sequence, by stream or all.
func (su suite) testIndex(t *testing.T) {
	ctx := ctxT(t)
	st, _ := su.store(t)
	a, b := events.NodeStream("a"), events.NodeStream("b")
	for _, p := range []struct {
		s     events.Stream
		first uint64
		v     string
		ok    bool
	}{{a, 9, "a9", true}, {a, 1, "a1", true}, {a, 1, "other", false}, {b, 1, "b1", true}} {
		ok, err := st.PutIndex(ctx, p.s, p.first, []byte(p.v))
		if err != nil || ok != p.ok {
			t.Fatalf("PutIndex %s #%d: %v %+v, want %v", p.s, p.first, ok, err, p.ok)
		}
	}
	all, err := st.IndexEntries(ctx, "", 0, false)
	if err != nil || len(all) != 3 || all[0].Stream != a || all[0].First != 1 || string(all[0].Value) != "a1" ||
		all[1].First != 9 || all[2].Stream != b || string(all[2].Value) != "b1" {
		t.Fatalf("entries %+v %v", all, err)
	}
	keys, err := st.IndexEntries(ctx, a, 0, true)
	if err != nil || len(keys) != 2 || keys[0].Value != nil || keys[1].First != 9 {
		t.Fatalf("keys of a %+v %v", keys, err)
	}
	if c := counts(t, st); c.Index != 3 {
		t.Fatalf("counts %+v", c)
	}
	if n, d1 := st.DeleteIndex(ctx, a, []uint64{1, 5}); d1 != nil || n != 1 {
		t.Fatalf("delete a #1, #5: %d %v", n, d1)
	}
	if n, d2 := st.DeleteIndex(ctx, a, nil); d2 != nil || n != 1 {
		t.Fatalf("delete a: %d %v", n, d2)
	}
	if n, d3 := st.DeleteIndex(ctx, "", nil); d3 != nil || n != 1 {
		t.Fatalf("delete all: %d %v", n, d3)
	}
	if all, err = st.IndexEntries(ctx, "", 0, false); err != nil || len(all) != 0 {
		t.Fatalf("left %+v %v", all, err)
	}
}
