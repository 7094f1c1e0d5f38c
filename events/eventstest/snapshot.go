package eventstest

import (
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// testSnapshotPointer: an append holding a Snapshot event moves the stream's snapshot
// pointer in the same transaction; other appends leave it; SnapshotSeq reads it at a
// revision; StartSeq and ReadFrom start there.
func (su suite) testSnapshotPointer(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	s := events.PoolStream("snap")
	if seq, _, err := l.SnapshotSeq(ctx, s, 0); err != nil || seq != 0 {
		t.Fatalf("empty stream: pointer %d, %v", seq, err)
	}
	head := appendN(t, l, s, events.Version{}, 5, 5)
	if seq, _, err := l.SnapshotSeq(ctx, s, 0); err != nil || seq != 0 {
		t.Fatalf("no snapshot yet: pointer %d, %v", seq, err)
	}
	snap := func(head events.Version, extra int) events.Version {
		t.Helper()
		evs := []*events.Event{SampleEvent(0, &events.Snapshot{State: []byte("s")})}
		for i := range extra {
			evs = append(evs, SampleEvent(i, &events.BlockAssigned{Index: uint64(100 + i), Node: "n"}))
		}
		v, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head, Events: evs})
		if err != nil {
			t.Fatalf("append snapshot: %+v", err)
		}
		return v
	}
	head = snap(head, 2) // snapshot at #6, then #7 #8
	_, rev6, err := l.Head(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _, err := l.SnapshotSeq(ctx, s, 0); err != nil || seq != 6 {
		t.Fatalf("pointer %d, %v; want 6", seq, err)
	}
	head = appendN(t, l, s, head, 3, 3)
	if seq, _, _ := l.SnapshotSeq(ctx, s, 0); seq != 6 {
		t.Fatalf("a plain append moved the pointer to %d", seq)
	}
	snap(head, 0) // #12
	if seq, _, _ := l.SnapshotSeq(ctx, s, 0); seq != 12 {
		t.Fatalf("pointer %d, want 12", seq)
	}
	if seq, _, _ := l.SnapshotSeq(ctx, s, rev6); seq != 6 {
		t.Fatalf("pointer at revision %d: %d, want 6", rev6, seq)
	}
	if from, err := events.StartSeq(ctx, l, s, rev6); err != nil || from != 6 {
		t.Fatalf("StartSeq at %d = %d, %v", rev6, from, err)
	}
	if from, err := events.StartSeq(ctx, l, events.PoolStream("none"), 0); err != nil || from != 1 {
		t.Fatalf("StartSeq of an empty stream = %d, %v", from, err)
	}
	var got []uint64
	if _, err := events.ReadFrom(ctx, l, s, 0, func(e *events.Event) error { got = append(got, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != 12 {
		t.Fatalf("ReadFrom read %v, want [12]", got)
	}

	// A full batch plus a snapshot is more than one transaction holds.
	evs := make([]*events.Event, events.MaxBatch)
	for i := range evs {
		evs[i] = SampleEvent(i, &events.BlockAssigned{Index: uint64(i), Node: "n"})
	}
	evs[len(evs)-1] = SampleEvent(0, &events.Snapshot{})
	if _, err := l.Append(ctx, events.AppendRequest{Stream: events.PoolStream("full"), Events: evs}); !errors.Is(err, events.ErrTooLarge) {
		t.Fatalf("a full batch with a snapshot: err = %v, want ErrTooLarge", err)
	}
}
