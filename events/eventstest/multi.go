package eventstest

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// testParts: an append with parts writes every stream in one revision or none of them;
// a part that moved is a conflict naming it (with what it missed), and fencing covers
// the whole append.
func (su suite) testParts(t *testing.T) {
	l, h := su.newLog(t)
	ctx := ctxT(t)
	node, blk, other := events.NodeStream("n1"), events.BlockStream("p", 7), events.BlockStream("p", 8)
	lease := h.NewLease()
	h.SetLeaseKey("/alive/n1", lease)
	cond := []events.Condition{{Key: "/alive/n1", Lease: lease}}
	take := func(i int, nodeHead, blkHead events.Version, s events.Stream) events.AppendRequest {
		_, idx, _ := s.Block()
		return events.AppendRequest{
			Stream: node, Expected: nodeHead, Conditions: cond,
			Events: []*events.Event{SampleEvent(i, &events.NodeBlockAdded{Pool: "p", Index: idx})},
			Parts: []events.Part{{Stream: s, Expected: blkHead,
				Events: []*events.Event{SampleEvent(i, &events.BlockAssigned{Index: idx, Node: "n1"})}}},
		}
	}
	req := take(1, events.Version{}, events.Version{}, blk)
	hn, err := l.Append(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	be := req.Parts[0].Events[0]
	if hn.Seq != 1 || be.Seq != 1 || be.Stream != blk || be.Revision == 0 || be.Revision != req.Events[0].Revision {
		t.Fatalf("after the append: node head %v, block event %s #%d at revision %d (node event at %d)",
			hn, be.Stream, be.Seq, be.Revision, req.Events[0].Revision)
	}
	hb, _, err := l.Head(ctx, blk)
	if err != nil || hb != (events.Version{Seq: 1, Hash: be.Hash}) {
		t.Fatalf("block head %v, %v", hb, err)
	}

	// Another writer takes the same block (expecting it empty): conflict naming the
	// block stream, carrying what it missed, and the node stream untouched.
	_, err = l.Append(ctx, take(2, hn, events.Version{}, blk))
	requireConflict(t, err, blk, hb)
	var ce *events.ConflictError
	if errors.As(err, &ce) && len(ce.Missed) > 0 {
		if len(ce.Missed) != 1 || ce.Missed[0].Payload.(*events.BlockAssigned).Node != "n1" {
			t.Fatalf("missed events: %d", len(ce.Missed))
		}
	}
	if got, _ := readAll(t, l, node, 1, 0); len(got) != 1 {
		t.Fatalf("node stream holds %d events after a failed multi-stream append, want 1", len(got))
	}
	// The main stream moved: conflict naming it, the part not written.
	_, err = l.Append(ctx, take(3, events.Version{}, events.Version{}, other))
	requireConflict(t, err, node, hn)
	if v, _, _ := l.Head(ctx, other); v.Seq != 0 {
		t.Fatalf("%s written by a failed append", other)
	}
	// Fenced: nothing written anywhere.
	h.DeleteKey("/alive/n1")
	if _, err = l.Append(ctx, take(4, hn, events.Version{}, other)); !errors.Is(err, events.ErrFenced) {
		t.Fatalf("append with a gone lease: %v, want ErrFenced", err)
	}
	if v, _, _ := l.Head(ctx, other); v.Seq != 0 {
		t.Fatalf("%s written by a fenced append", other)
	}
	h.SetLeaseKey("/alive/n1", lease)
	if _, err = l.Append(ctx, take(5, hn, events.Version{}, other)); err != nil {
		t.Fatal(err)
	}

	// The same stream twice, and more writes than a transaction holds: refused.
	dup := take(6, hn, events.Version{}, node)
	if _, err = l.Append(ctx, dup); err == nil || errors.Is(err, events.ErrConflict) {
		t.Fatalf("append naming a stream twice: %v, want a refusal", err)
	}
	big := events.AppendRequest{Stream: events.NodeStream("n2")}
	for i := range events.MaxBatch {
		big.Events = append(big.Events, SampleEvent(i, &events.NodeRegistered{Node: "n2", Lease: 1}))
	}
	big.Events = big.Events[:events.MaxOps-2] // with its head: MaxOps-1 writes
	big.Parts = []events.Part{{Stream: events.BlockStream("p", 9), Events: []*events.Event{SampleEvent(1, &events.BlockAssigned{Index: 9, Node: "n2"})}}}
	if _, err = l.Append(ctx, big); !errors.Is(err, events.ErrTooLarge) {
		t.Fatalf("append of %d writes: %v, want ErrTooLarge", events.MaxOps+1, err)
	}
	big.Events = big.Events[:events.MaxOps-3]
	if _, err = l.Append(ctx, big); err != nil {
		t.Fatalf("append of exactly %d writes: %v", events.MaxOps, err)
	}
}

// testRangeGuards: an append guarded on every stream under a prefix, as read at a
// revision, holds until one of them moves or a new one appears; streams outside the
// prefix do not count.
func (su suite) testRangeGuards(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	for i := range 3 {
		appendN(t, l, events.BlockStream("p", uint64(i)), events.Version{}, 1, 1)
	}
	_, rev, err := l.Streams(ctx, "block/p/", 0)
	if err != nil {
		t.Fatal(err)
	}
	guard := []events.RangeGuard{{Prefix: "block/p/", Rev: rev}}
	del := func(i int, head events.Version) (events.Version, error) {
		return l.Append(ctx, events.AppendRequest{Stream: events.ClusterStream, Expected: head, RangeGuards: guard,
			Events: []*events.Event{SampleEvent(i, &events.PoolSubnetAdded{Name: "p"})}})
	}
	hc, err := del(1, events.Version{})
	if err != nil {
		t.Fatalf("range guard on unmoved streams: %v", err)
	}
	// Streams under another prefix that merely starts the same do not count.
	appendN(t, l, events.BlockStream("pp", 0), events.Version{}, 1, 1)
	if hc, err = del(2, hc); err != nil {
		t.Fatalf("range guard after a write outside its prefix: %v", err)
	}
	// A new stream under the prefix fails it.
	hb := appendN(t, l, events.BlockStream("p", 12), events.Version{}, 1, 1)
	_, err = del(3, hc)
	requireConflict(t, err, events.BlockStream("p", 12), hb)
	// Read again: holds; then an existing stream moves: fails, nothing written.
	_, rev2, _ := l.Streams(ctx, "block/p/", 0)
	guard[0].Rev = rev2
	if hc, err = del(4, hc); err != nil {
		t.Fatalf("range guard at the new revision: %v", err)
	}
	head1, _, _ := l.Head(ctx, events.BlockStream("p", 1))
	hb1 := appendN(t, l, events.BlockStream("p", 1), head1, 1, 1)
	_, err = del(5, hc)
	requireConflict(t, err, events.BlockStream("p", 1), hb1)
	if got, _ := readAll(t, l, events.ClusterStream, 1, 0); len(got) != 3 {
		t.Fatalf("cluster stream holds %d events, want 3", len(got))
	}
	// A guard without a revision is refused.
	if _, err := l.Append(context.Background(), events.AppendRequest{Stream: events.ClusterStream, Expected: hc,
		Events: []*events.Event{SampleEvent(9, &events.PoolSubnetAdded{Name: "p"})}, RangeGuards: []events.RangeGuard{{Prefix: "block/p/"}}}); err == nil {
		t.Fatal("range guard without a revision accepted")
	}
}

// testReadPrefix: every stream under a prefix, each in sequence and chain-checked, in
// key order ("block/p/1" before "block/p/10"), at a revision; streams that only share
// the beginning of the prefix's name are not read; a damaged event stops the read.
func (su suite) testReadPrefix(t *testing.T) {
	l, h := su.newLog(t)
	ctx := ctxT(t)
	lens := map[uint64]int{1: 3, 10: 1, 2: 2}
	for idx, n := range lens {
		appendN(t, l, events.BlockStream("p", idx), events.Version{}, n, 1)
	}
	appendN(t, l, events.BlockStream("pp", 0), events.Version{}, 2, 2)
	_, rev, err := l.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	h1, _, _ := l.Head(ctx, events.BlockStream("p", 1))
	appendN(t, l, events.BlockStream("p", 1), h1, 1, 1) // after rev: not seen at rev
	var got []string
	r, err := l.ReadPrefix(ctx, "block/p/", rev, func(e *events.Event) error {
		got = append(got, fmt.Sprintf("%s#%d", e.Stream, e.Seq))
		return nil
	})
	if err != nil || r != rev {
		t.Fatalf("ReadPrefix at %d: rev %d, %+v", rev, r, err)
	}
	want := "[block/p/1#1 block/p/1#2 block/p/1#3 block/p/10#1 block/p/2#1 block/p/2#2]"
	if fmt.Sprint(got) != want {
		t.Fatalf("ReadPrefix read %v, want %s", got, want)
	}
	n := 0
	if _, err := l.ReadPrefix(ctx, "block/p/", 0, func(*events.Event) error { n++; return nil }); err != nil || n != 7 {
		t.Fatalf("ReadPrefix at the latest revision: %d events, %v", n, err)
	}
	if _, err := l.ReadPrefix(ctx, "block/none/", 0, func(*events.Event) error { n++; return nil }); err != nil || n != 7 {
		t.Fatalf("ReadPrefix of nothing: %v", err)
	}
	h.Corrupt(events.BlockStream("p", 2), 2, []byte{0xC1, 1})
	if _, err := l.ReadPrefix(ctx, "block/p/", 0, func(*events.Event) error { return nil }); !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("ReadPrefix over a damaged event: %v, want ErrCorrupt", err)
	}
}
