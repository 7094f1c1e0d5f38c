package readside_test

import (
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/readside"
)

// TestStatesAtTime: the state at a time is every stream folded through its last event
// stamped at or before it; Time is the newest event folded, Rev its revision; several
// points are answered against one current revision.
func TestStatesAtTime(t *testing.T) {
	log := memLog(t)
	smallLog(t, log)
	var points []readside.Point
	for _, h := range []float64{0.5, 1, 2.5, 3, 4.5, 10} {
		points = append(points, readside.Point{Time: at(h)})
	}
	sts, err := readside.StatesAt(t.Context(), log, points, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, current, _ := log.Streams(t.Context(), "", 0)
	for i, p := range points {
		st := sts[i]
		if got, want := hashOf(t, st.State.State), hashOf(t, fold(t, log, p.Includes)); got != want {
			t.Fatalf("%s: hash %s, want %s", p, got, want)
		}
		if st.Current != current || st.ReadAtRevision {
			t.Fatalf("%s: current %d (want %d), read at revision %v", p, st.Current, current, st.ReadAtRevision)
		}
	}
	if !sts[0].Time.IsZero() || sts[0].Rev != 0 || len(sts[0].Cluster.Pools) != 0 {
		t.Fatalf("before the first event: time %s, revision %d, %d pools", sts[0].Time, sts[0].Rev, len(sts[0].Cluster.Pools))
	}
	if !sts[2].Time.Equal(at(2)) || len(sts[2].Nodes["n1"].Attached) != 1 {
		t.Fatalf("at 2.5h: time %s, n1 holds %d", sts[2].Time, len(sts[2].Nodes["n1"].Attached))
	}
	if !sts[5].Time.Equal(at(5)) || sts[5].Rev != current {
		t.Fatalf("after the last event: time %s, revision %d (want %s, %d)", sts[5].Time, sts[5].Rev, at(5), current)
	}
}

// TestStatesAtRevision: a revision etcd still has is read at that revision; once
// compacted, the current log is folded up to it, with the same state; a revision after
// the log's is ErrFutureRevision, named by the point's label.
func TestStatesAtRevision(t *testing.T) {
	log := memLog(t)
	w := smallLog(t, log)
	mid := w.add(events.NodeStream("n2"), at(6), assigned("c5eeeeeeeeeeeeeeee", "data", "db-1", "p", 1, "10.0.0.5"))[0]
	w.add(events.NodeStream("n1"), at(7), &events.NodeRetired{Node: "n1"})
	p := readside.Point{Rev: mid.Revision}
	want := hashOf(t, fold(t, log, p.Includes))
	st, err := readside.LoadAt(t.Context(), log, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !st.ReadAtRevision || st.Rev != mid.Revision || hashOf(t, st.State.State) != want || !st.Time.Equal(at(6)) {
		t.Fatalf("at revision %d: read at revision %v, rev %d, time %s", mid.Revision, st.ReadAtRevision, st.Rev, st.Time)
	}
	log.Compact(mid.Revision + 1)
	st, err = readside.LoadAt(t.Context(), log, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.ReadAtRevision || st.Rev != mid.Revision || hashOf(t, st.State.State) != want {
		t.Fatalf("compacted: read at revision %v, rev %d, same state %v", st.ReadAtRevision, st.Rev, hashOf(t, st.State.State) == want)
	}
	_, err = readside.StatesAt(t.Context(), log, []readside.Point{p, {Rev: st.Current + 1, Label: "state at TO"}}, nil)
	if !errors.Is(err, readside.ErrFutureRevision) || !contains(err, "state at TO: revision") || !contains(err, "is in the future") {
		t.Fatalf("future revision: %v", err)
	}
}

// TestStatesAtArchived: once the events before the snapshots are archived, a moment
// before them fails naming the archive (events.ErrCompacted) unless the archive file is
// given, and with it the state is what it was before the archive; a moment after the
// snapshots needs no archive.
func TestStatesAtArchived(t *testing.T) {
	lg, _, file, before := archivedLog(t, nil)
	ctx := t.Context()
	_, err := readside.LoadAt(ctx, lg, readside.Point{Time: at(2.5), Label: "state at FROM"}, nil)
	if !errors.Is(err, events.ErrCompacted) || !contains(err, "state at FROM: ") || !contains(err, "were archived and are needed here") {
		t.Fatalf("before the archive's end, without it: %v", err)
	}
	var points []readside.Point
	for h := range 9 {
		points = append(points, readside.Point{Time: at(float64(h))})
	}
	sts, err := readside.StatesAt(ctx, lg, points, []string{file})
	if err != nil {
		t.Fatal(err)
	}
	for h, st := range sts {
		if got := hashOf(t, st.State.State); got != before[h] {
			t.Fatalf("at %dh with the archive: hash %s, before the archive %s", h, got, before[h])
		}
	}
	st, err := readside.LoadAt(ctx, lg, readside.Point{Time: at(8)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := hashOf(t, st.State.State); got != before[8] {
		t.Fatalf("after the snapshots, without the archive: hash %s, want %s", got, before[8])
	}
}
