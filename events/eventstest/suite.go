package eventstest

import (
	"context"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// Harness reaches into a log's store for what the Log interface cannot do: leases,
// compaction, damaged bytes.
type Harness interface {
	// NewLease returns a live lease ID to attach keys to.
	NewLease() int64
	// SetLeaseKey creates or replaces key, attached to lease.
	SetLeaseKey(key string, lease int64)
	// DeleteKey removes key (as its lease expiring would).
	DeleteKey(key string)
	// Compact discards history at or before revision rev.
	Compact(rev int64)
	// Corrupt overwrites the stored bytes of event seq of stream.
	Corrupt(stream events.Stream, seq uint64, value []byte)
}

// NewLog makes a fresh, empty log for one test, closed when the test ends.
type NewLog func(t *testing.T) (events.Log, Harness)

type suite struct{ newLog NewLog }

// wait bounds every wait for a watch; generous, tests assert behaviour not speed.
const wait = 30 * time.Second

// Run runs the conformance suite against the logs newLog makes.
func Run(t *testing.T, newLog NewLog) {
	t.Helper()
	su := suite{newLog: newLog}
	t.Run("RoundTripEveryType", su.testRoundTrip)
	t.Run("Conflict", su.testConflict)
	t.Run("ConcurrentWriters", su.testConcurrentWriters)
	t.Run("Fencing", su.testFencing)
	t.Run("Guards", su.testGuards)
	t.Run("Parts", su.testParts)
	t.Run("RangeGuards", su.testRangeGuards)
	t.Run("ReadPrefix", su.testReadPrefix)
	t.Run("BatchLimits", su.testBatch)
	t.Run("ReadFrom", su.testReadFrom)
	t.Run("ReadAndStreamsAtRevision", su.testAtRevision)
	t.Run("WatchOrderAndResume", su.testWatch)
	t.Run("WatchFillsGap", su.testWatchGap)
	t.Run("WatchLive", func(t *testing.T) { su.testWatchLive(t, false) })
	t.Run("WatchLivePerStreamOrder", func(t *testing.T) { su.testWatchLive(t, true) })
	t.Run("WatchSurvivesCompaction", su.testWatchCompaction)
	t.Run("DamagedLog", su.testDamaged)
	t.Run("InvalidRequests", su.testInvalid)
	t.Run("SnapshotPointer", su.testSnapshotPointer)
	t.Run("StoreBulkLoad", su.testBulkLoad)
	t.Run("StoreBulkGuard", su.testBulkGuard)
	t.Run("StoreTrim", su.testTrim)
	t.Run("StoreIndex", su.testIndex)
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// appendN appends n BlockAssigned events to stream, in batches of batch, and returns the head.
func appendN(t *testing.T, l events.Log, stream events.Stream, head events.Version, n, batch int) events.Version {
	t.Helper()
	ctx := ctxT(t)
	for n > 0 {
		k := min(n, batch)
		evs := make([]*events.Event, k)
		for i := range evs {
			evs[i] = SampleEvent(int(head.Seq)+i, &events.BlockAssigned{Index: head.Seq + uint64(i), Node: "node-1"})
		}
		h, err := l.Append(ctx, events.AppendRequest{Stream: stream, Expected: head, Events: evs})
		if err != nil {
			t.Fatalf("append %d to %s at #%d: %+v", k, stream, head.Seq, err)
		}
		head = h
		n -= k
	}
	return head
}

func readAll(t *testing.T, l events.Log, s events.Stream, from uint64, rev int64) ([]*events.Event, int64) {
	t.Helper()
	var out []*events.Event
	r, err := l.Read(ctxT(t), s, from, rev, func(e *events.Event) error { out = append(out, e); return nil })
	if err != nil {
		t.Fatalf("read %s from %d at %d: %+v", s, from, rev, err)
	}
	return out, r
}

func (su suite) testRoundTrip(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	heads := map[events.Stream]events.Version{}
	written := map[events.Stream][]*events.Event{}
	for i, s := range Samples() {
		e := SampleEvent(i, s.Payload)
		h, err := l.Append(ctx, events.AppendRequest{Stream: s.Stream, Expected: heads[s.Stream], Events: []*events.Event{e}})
		if err != nil {
			t.Fatalf("append %s: %+v", s.Name, err)
		}
		if h.Seq != heads[s.Stream].Seq+1 || h.Hash != e.Hash || e.Seq != h.Seq || e.Stream != s.Stream || e.Revision == 0 {
			t.Fatalf("append %s: head %v, event seq %d hash %s stream %s revision %d", s.Name, h, e.Seq, e.Hash, e.Stream, e.Revision)
		}
		if e.Prev != heads[s.Stream].Hash {
			t.Fatalf("append %s: prev %s, want %s", s.Name, e.Prev, heads[s.Stream].Hash)
		}
		heads[s.Stream] = h
		written[s.Stream] = append(written[s.Stream], e)
	}
	for s, want := range written {
		got, _ := readAll(t, l, s, 1, 0)
		if len(got) != len(want) {
			t.Fatalf("%s: read %d events, wrote %d", s, len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if !g.Time.Equal(w.Time) || g.Actor != w.Actor || g.Seq != w.Seq || g.Stream != w.Stream ||
				g.Prev != w.Prev || g.Hash != w.Hash || g.Revision != w.Revision || g.Schema != events.SchemaVersion {
				t.Errorf("%s #%d: read %+v, wrote %+v", s, w.Seq, g, w)
			}
			if !reflect.DeepEqual(g.Payload, w.Payload) {
				t.Errorf("%s #%d: payload read %#v, wrote %#v", s, w.Seq, g.Payload, w.Payload)
			}
		}
		h, rev, err := l.Head(ctx, s)
		if err != nil || h != heads[s] || rev < want[len(want)-1].Revision {
			t.Errorf("Head(%s) = %v, %d, %v; want %v", s, h, rev, err, heads[s])
		}
	}
	h, _, err := l.Head(ctx, events.NodeStream("nobody"))
	if err != nil || h != (events.Version{}) {
		t.Errorf("Head of an unknown stream = %v, %v; want zero, nil", h, err)
	}
	n := 0
	if _, err := l.Read(ctx, events.NodeStream("nobody"), 1, 0, func(*events.Event) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("Read of an unknown stream: %d events, %v", n, err)
	}
}

func (su suite) testConflict(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	s := events.PoolStream("p")
	// Two writers read the same (empty) head; one wins.
	a := SampleEvent(1, &events.BlockAssigned{Index: 1, Node: "a"})
	b := SampleEvent(2, &events.BlockAssigned{Index: 1, Node: "b"})
	ha, err := l.Append(ctx, events.AppendRequest{Stream: s, Events: []*events.Event{a}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Append(ctx, events.AppendRequest{Stream: s, Events: []*events.Event{b}})
	requireConflict(t, err, s, ha)

	// Right sequence, wrong hash: still a conflict.
	wrong := ha
	wrong.Hash[0] ^= 1
	_, err = l.Append(ctx, events.AppendRequest{Stream: s, Expected: wrong, Events: []*events.Event{b}})
	requireConflict(t, err, s, ha)

	// Behind by one.
	hb := appendN(t, l, s, ha, 1, 1)
	_, err = l.Append(ctx, events.AppendRequest{Stream: s, Expected: ha, Events: []*events.Event{b}})
	requireConflict(t, err, s, hb)

	// Nothing was written by the losers.
	got, _ := readAll(t, l, s, 1, 0)
	if len(got) != 2 || got[0].Payload.(*events.BlockAssigned).Node != "a" {
		t.Fatalf("after conflicts the stream holds %d events", len(got))
	}
}

// testGuards: an append guarded on another stream's head fails with a conflict naming
// that stream once it moved, and writes nothing.
func (su suite) testGuards(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	s, g := events.ClusterStream, events.PoolStream("p")
	mk := func(i int) []*events.Event {
		return []*events.Event{SampleEvent(i, &events.PoolDeleted{Name: "p"})}
	}
	// A guard on an empty stream holds while it stays empty.
	hs, err := l.Append(ctx, events.AppendRequest{Stream: s, Events: mk(1), Guards: []events.Guard{{Stream: g}}})
	if err != nil {
		t.Fatal(err)
	}
	hg := appendN(t, l, g, events.Version{}, 1, 1)
	_, err = l.Append(ctx, events.AppendRequest{Stream: s, Expected: hs, Events: mk(2), Guards: []events.Guard{{Stream: g}}})
	requireConflict(t, err, g, hg)
	// Pinned at its current head, the guard holds.
	hs2, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: hs, Events: mk(3), Guards: []events.Guard{{Stream: g, Version: hg}}})
	if err != nil {
		t.Fatal(err)
	}
	// Moved again: conflict on the guard, and nothing written to s.
	hg2 := appendN(t, l, g, hg, 1, 1)
	_, err = l.Append(ctx, events.AppendRequest{Stream: s, Expected: hs2, Events: mk(4), Guards: []events.Guard{{Stream: g, Version: hg}}})
	requireConflict(t, err, g, hg2)
	if got, _ := readAll(t, l, s, 1, 0); len(got) != 2 {
		t.Fatalf("stream holds %d events after a failed guarded append, want 2", len(got))
	}
	// A plain conflict may carry the missed events; if it does, they chain onto the
	// writer's head and end at the current head.
	_, err = l.Append(ctx, events.AppendRequest{Stream: g, Expected: events.Version{}, Events: mk(5)})
	var ce *events.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a conflict", err)
	}
	if len(ce.Missed) > 0 {
		if len(ce.Missed) != 2 || ce.Missed[0].Seq != 1 || ce.Missed[1].Hash != hg2.Hash {
			t.Fatalf("missed events %d do not lead to the head", len(ce.Missed))
		}
	}
}

func requireConflict(t *testing.T, err error, s events.Stream, head events.Version) {
	t.Helper()
	if !errors.Is(err, events.ErrConflict) {
		t.Fatalf("got %v, want ErrConflict", err)
	}
	var ce *events.ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("conflict %v carries no *ConflictError", err)
	}
	if ce.Stream != s || ce.Head != head {
		t.Fatalf("conflict carries %s at %v, want %s at %v", ce.Stream, ce.Head, s, head)
	}
}

func (su suite) testConcurrentWriters(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	s := events.PoolStream("race")
	const writers, each = 4, 8
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := 0
			var head events.Version
			for done < each {
				e := SampleEvent(done, &events.BlockAssigned{Index: uint64(w*100 + done), Node: fmt.Sprintf("n%d", w)})
				h, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head, Events: []*events.Event{e}})
				var ce *events.ConflictError
				switch {
				case err == nil:
					head = h
					done++
				case errors.As(err, &ce):
					head = ce.Head // catch up and try again
				default:
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	got, _ := readAll(t, l, s, 1, 0)
	if len(got) != writers*each {
		t.Fatalf("stream holds %d events, want %d", len(got), writers*each)
	}
}

func (su suite) testFencing(t *testing.T) {
	l, h := su.newLog(t)
	ctx := ctxT(t)
	s := events.NodeStream("n1")
	key := events.AliveKey("", "n1")
	mine, other := h.NewLease(), h.NewLease()
	app := func(head events.Version, conds ...events.Condition) (events.Version, error) {
		e := SampleEvent(int(head.Seq), &events.NodeRegistered{Node: "n1", Lease: mine})
		return l.Append(ctx, events.AppendRequest{Stream: s, Expected: head, Events: []*events.Event{e}, Conditions: conds})
	}
	requireFenced := func(err error, what string) {
		t.Helper()
		if !errors.Is(err, events.ErrFenced) {
			t.Fatalf("%s: got %v, want ErrFenced", what, err)
		}
		if !strings.Contains(err.Error(), key) {
			t.Fatalf("%s: error %q does not name the key %s", what, err, key)
		}
	}
	held := events.Condition{Key: key, Lease: mine}
	gone := events.Condition{Key: key, Absent: true}

	_, err := app(events.Version{}, held)
	requireFenced(err, "lease key absent")

	h.SetLeaseKey(key, mine)
	head, err := app(events.Version{}, held)
	if err != nil {
		t.Fatalf("own lease held: %+v", err)
	}
	_, err = app(head, gone)
	requireFenced(err, "absent condition while key exists")

	h.SetLeaseKey(key, other)
	_, err = app(head, held)
	requireFenced(err, "key held by another lease")
	// Fenced beats conflict: a fenced writer must stop, not catch up.
	_, err = app(events.Version{}, held)
	requireFenced(err, "fenced and behind")

	h.DeleteKey(key)
	_, err = app(head, held)
	requireFenced(err, "key deleted")
	head, err = app(head, gone)
	if err != nil {
		t.Fatalf("absent condition with key gone: %+v", err)
	}
	if got, _ := readAll(t, l, s, 1, 0); len(got) != 2 || head.Seq != 2 {
		t.Fatalf("stream holds %d events (head %d), want 2: fenced appends wrote something", len(got), head.Seq)
	}
}

func (su suite) testBatch(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	s := events.NodeStream("batch")
	mk := func(n int) []*events.Event {
		evs := make([]*events.Event, n)
		for i := range evs {
			evs[i] = SampleEvent(i, Samples()[8].Payload)
		}
		return evs
	}
	_, err := l.Append(ctx, events.AppendRequest{Stream: s, Events: mk(events.MaxBatch + 1)})
	if !errors.Is(err, events.ErrTooLarge) {
		t.Fatalf("MaxBatch+1 events: got %v, want ErrTooLarge", err)
	}
	big := mk(2)
	big[0].Payload = &events.Snapshot{State: make([]byte, events.MaxBatchBytes)}
	_, err = l.Append(ctx, events.AppendRequest{Stream: s, Events: big})
	if !errors.Is(err, events.ErrTooLarge) {
		t.Fatalf("batch over MaxBatchBytes: got %v, want ErrTooLarge", err)
	}
	if h, _, _ := l.Head(ctx, s); h.Seq != 0 {
		t.Fatalf("rejected batches wrote %d events", h.Seq)
	}
	evs := mk(events.MaxBatch)
	head, err := l.Append(ctx, events.AppendRequest{Stream: s, Events: evs})
	if err != nil {
		t.Fatalf("MaxBatch events: %+v", err)
	}
	if head.Seq != events.MaxBatch {
		t.Fatalf("head %d after MaxBatch events", head.Seq)
	}
	got, _ := readAll(t, l, s, 1, 0)
	for i, e := range got {
		if e.Revision != evs[0].Revision || e.Seq != uint64(i+1) {
			t.Fatalf("#%d: revision %d (want %d, one transaction), seq %d", i+1, e.Revision, evs[0].Revision, e.Seq)
		}
	}
}

func (su suite) testReadFrom(t *testing.T) {
	l, _ := su.newLog(t)
	s := events.PoolStream("r")
	appendN(t, l, s, events.Version{}, 25, 7)
	for _, tc := range []struct {
		from  uint64
		first uint64
		n     int
	}{{0, 1, 25}, {1, 1, 25}, {5, 5, 21}, {25, 25, 1}, {26, 0, 0}, {1000, 0, 0}} {
		got, _ := readAll(t, l, s, tc.from, 0)
		if len(got) != tc.n || (tc.n > 0 && got[0].Seq != tc.first) {
			t.Errorf("read from %d: %d events starting %v, want %d from %d", tc.from, len(got), got, tc.n, tc.first)
		}
	}
	stop := fmt.Errorf("stop")
	n := 0
	_, err := l.Read(ctxT(t), s, 1, 0, func(*events.Event) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("callback error: got %v after %d events, want it returned after 1", err, n)
	}
}

func (su suite) testAtRevision(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	a, b := events.PoolStream("a"), events.PoolStream("b")
	ha := appendN(t, l, a, events.Version{}, 3, 3)
	hb := appendN(t, l, b, events.Version{}, 2, 1)
	m, rev, err := l.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m[a] != ha || m[b] != hb {
		t.Fatalf("Streams = %v", m)
	}
	appendN(t, l, a, ha, 4, 2)
	appendN(t, l, events.NodeStream("late"), events.Version{}, 1, 1)

	m2, rev2, err := l.Streams(ctx, "", rev)
	if err != nil || rev2 != rev || len(m2) != 2 || m2[a] != ha || m2[b] != hb {
		t.Fatalf("Streams at %d = %v, %d, %v; want %v", rev, m2, rev2, err, m)
	}
	m3, _, err := l.Streams(ctx, "pool/", 0)
	if err != nil || len(m3) != 2 || m3[a].Seq != 7 {
		t.Fatalf("Streams(pool/) = %v, %v", m3, err)
	}
	m4, _, err := l.Streams(ctx, "node/", 0)
	if err != nil || len(m4) != 1 {
		t.Fatalf("Streams(node/) = %v, %v", m4, err)
	}
	got, r := readAll(t, l, a, 1, rev)
	if r != rev || len(got) != 3 || got[2].Hash != ha.Hash {
		t.Fatalf("Read at %d: %d events, revision %d", rev, len(got), r)
	}
	got, _ = readAll(t, l, a, 2, 0)
	if len(got) != 6 {
		t.Fatalf("Read latest from 2: %d events, want 6", len(got))
	}
}

// collector gathers a watch's events and checks their order.
type collector struct {
	t       *testing.T
	ch      <-chan events.WatchBatch
	got     []*events.Event
	lastRev int64
	// perStream: the watch keeps each stream's order only (PerStreamOrder), so
	// batches of different streams may go back in revision.
	perStream bool
}

func (c *collector) next(n int) []*events.Event {
	c.t.Helper()
	deadline := time.After(wait)
	start := len(c.got)
	for len(c.got) < start+n {
		select {
		case b, ok := <-c.ch:
			if !ok {
				c.t.Fatalf("watch closed after %d of %d events", len(c.got)-start, n)
			}
			if b.Err != nil {
				c.t.Fatalf("watch error: %+v", b.Err)
			}
			if len(b.Events) == 0 {
				c.t.Fatalf("empty watch batch at revision %d", b.Revision)
			}
			if b.Revision < c.lastRev && !c.perStream {
				c.t.Fatalf("watch went back from revision %d to %d", c.lastRev, b.Revision)
			}
			c.lastRev = b.Revision
			for _, e := range b.Events {
				if e.Revision != b.Revision {
					c.t.Fatalf("event %s #%d at revision %d in a batch of revision %d", e.Stream, e.Seq, e.Revision, b.Revision)
				}
			}
			c.got = append(c.got, b.Events...)
		case <-deadline:
			c.t.Fatalf("watch delivered %d of %d events within %s", len(c.got)-start, n, wait)
		}
	}
	if len(c.got) > start+n {
		c.t.Fatalf("watch delivered %d events, want %d: %s", len(c.got)-start, n, describe(c.got[start:]))
	}
	return c.got[start:]
}

func describe(evs []*events.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s#%d@%d ", e.Stream, e.Seq, e.Revision)
	}
	return b.String()
}

// requireDense checks that evs hold, per stream, exactly the sequences (after, upto].
func requireDense(t *testing.T, evs []*events.Event, want map[events.Stream][2]uint64) {
	t.Helper()
	next := map[events.Stream]uint64{}
	for s, r := range want {
		next[s] = r[0] + 1
	}
	for _, e := range evs {
		n, ok := next[e.Stream]
		if !ok {
			t.Fatalf("unexpected stream %s in %s", e.Stream, describe(evs))
		}
		if e.Seq != n {
			t.Fatalf("%s: got #%d, want #%d (gap or repeat): %s", e.Stream, e.Seq, n, describe(evs))
		}
		next[e.Stream] = n + 1
	}
	for s, r := range want {
		if next[s] != r[1]+1 {
			t.Fatalf("%s: delivered up to #%d, want #%d: %s", s, next[s]-1, r[1], describe(evs))
		}
	}
}

func (su suite) testWatch(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	c, p, n := events.ClusterStream, events.PoolStream("w"), events.NodeStream("other")
	_, rev0, err := l.Head(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	var hc, hp, hn events.Version
	for i := 0; i < 5; i++ {
		hc = appendN(t, l, c, hc, 1, 1)
		hp = appendN(t, l, p, hp, 3, 3)
		hn = appendN(t, l, n, hn, 1, 1)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	col := &collector{t: t, ch: l.Watch(wctx, events.WatchRequest{Prefixes: []string{"cluster", "pool/"}, FromRev: rev0})}
	got := col.next(20)
	requireDense(t, got, map[events.Stream][2]uint64{c: {0, 5}, p: {0, 15}})
	for i := 1; i < len(got); i++ {
		if got[i].Revision < got[i-1].Revision {
			t.Fatalf("not in revision order: %s", describe(got))
		}
	}
	cancel()
	for range col.ch {
	}

	// Resume: from the start again, but the caller has cluster up to #3 and pool up to #9.
	wctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	col2 := &collector{t: t, ch: l.Watch(wctx2, events.WatchRequest{Prefixes: []string{"cluster", "pool/"}, FromRev: rev0,
		After: map[events.Stream]uint64{c: 3, p: 9}})}
	got = col2.next(8)
	requireDense(t, got, map[events.Stream][2]uint64{c: {3, 5}, p: {9, 15}})
	// A new event arrives next, with nothing repeated before it.
	hc = appendN(t, l, c, hc, 1, 1)
	got = col2.next(1)
	if got[0].Stream != c || got[0].Seq != hc.Seq {
		t.Fatalf("after resume got %s, want cluster#%d", describe(got), hc.Seq)
	}
}

func (su suite) testWatchGap(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	s := events.PoolStream("g")
	h := appendN(t, l, s, events.Version{}, 4, 2)
	_, rev, _ := l.Head(ctx, s)
	h = appendN(t, l, s, h, 3, 3)
	// The caller says it has #1 only but watches from after #4's revision.
	col := &collector{t: t, ch: l.Watch(ctx, events.WatchRequest{Prefixes: []string{"pool/g"}, FromRev: rev,
		After: map[events.Stream]uint64{s: 1}})}
	got := col.next(6)
	requireDense(t, got, map[events.Stream][2]uint64{s: {1, h.Seq}})
}

// testWatchLive: events appended to several streams at once while watched all come, each
// stream's in sequence, none twice; with perStream, under WatchRequest.PerStreamOrder
// (the check is the same: requireDense looks at each stream's order only).
func (su suite) testWatchLive(t *testing.T, perStream bool) {
	t.Helper()
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	_, rev, err := l.Head(ctx, events.ClusterStream)
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{t: t, perStream: perStream,
		ch: l.Watch(ctx, events.WatchRequest{Prefixes: []string{"cluster", "pool/", "node/me"}, FromRev: rev, PerStreamOrder: perStream})}
	var wg sync.WaitGroup
	streams := []events.Stream{events.ClusterStream, events.PoolStream("x"), events.PoolStream("y"), events.NodeStream("me")}
	for _, s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			appendN(t, l, s, events.Version{}, 20, 3)
		}()
	}
	appendN(t, l, events.NodeStream("notme"), events.Version{}, 5, 1)
	wg.Wait()
	got := col.next(80)
	want := map[events.Stream][2]uint64{}
	for _, s := range streams {
		want[s] = [2]uint64{0, 20}
	}
	requireDense(t, got, want)
}

func (su suite) testWatchCompaction(t *testing.T) {
	l, h := su.newLog(t)
	ctx := ctxT(t)
	a, b := events.PoolStream("a"), events.NodeStream("b")
	ha := appendN(t, l, a, events.Version{}, 5, 2)
	hb := appendN(t, l, b, events.Version{}, 3, 1)
	_, mid, _ := l.Head(ctx, a)
	ha = appendN(t, l, a, ha, 6, 4)
	hb = appendN(t, l, b, hb, 2, 1)
	_, now, _ := l.Head(ctx, a)
	h.Compact(now)

	if _, err := l.Read(ctx, a, 1, mid, func(*events.Event) error { return nil }); !errors.Is(err, events.ErrCompacted) {
		t.Fatalf("Read at compacted revision %d: got %v, want ErrCompacted", mid, err)
	}
	// A reader that stopped at mid resumes after compaction: exactly the missing events.
	col := &collector{t: t, ch: l.Watch(ctx, events.WatchRequest{Prefixes: []string{"pool/", "node/"}, FromRev: mid,
		After: map[events.Stream]uint64{a: 5, b: 3}})}
	got := col.next(8)
	requireDense(t, got, map[events.Stream][2]uint64{a: {5, 11}, b: {3, 5}})
	// Live events continue, without repeats, also across a compaction while watching.
	ha = appendN(t, l, a, ha, 2, 2)
	_, now, _ = l.Head(ctx, a)
	h.Compact(now)
	hb = appendN(t, l, b, hb, 1, 1)
	got = col.next(3)
	requireDense(t, got, map[events.Stream][2]uint64{a: {11, ha.Seq}, b: {5, hb.Seq}})
}

// typeCodes are the stored codes of known types (events/codec.go).
var typeCodes = map[string]uint64{"BlockAssigned": 4}

// bogus builds stored bytes: magic, schema, type, then whatever rest.
func bogus(schema uint64, typ string, rest []byte) []byte {
	b := []byte{0xC1}
	b = binary.AppendUvarint(b, schema)
	if code, ok := typeCodes[typ]; ok {
		b = binary.AppendUvarint(b, code)
		return append(b, rest...)
	}
	b = append(b, 0) // type by name: one this build does not know
	b = binary.AppendUvarint(b, uint64(len(typ)))
	b = append(b, typ...)
	return append(b, rest...)
}

func (su suite) testDamaged(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value func(prev events.Hash) []byte
		want  error
	}{
		{"UnknownType", func(events.Hash) []byte { return bogus(1, "BlockStolen", []byte{0, 0}) }, events.ErrUnknownType},
		{"FutureSchema", func(events.Hash) []byte { return bogus(events.SchemaVersion+1, "BlockAssigned", nil) }, events.ErrFutureSchema},
		{"CorruptBytes", func(events.Hash) []byte { return bogus(1, "BlockAssigned", []byte{1, 2, 3}) }, events.ErrCorrupt},
		{"NotAnEvent", func(events.Hash) []byte { return []byte(`{"json":"no"}`) }, events.ErrCorrupt},
		{"BrokenChain", func(prev events.Hash) []byte {
			prev[0] ^= 0xff // valid bytes, wrong previous-hash
			e := &events.Event{Time: Base, Actor: "mallory", Prev: prev, Payload: &events.BlockAssigned{Index: 9, Node: "x"}}
			v, err := events.Encode(e)
			if err != nil {
				panic(err)
			}
			return v
		}, events.ErrChainBroken},
		{"TamperedPayload", func(prev events.Hash) []byte {
			e := &events.Event{Time: Base, Actor: "mallory", Prev: prev, Payload: &events.BlockAssigned{Index: 9, Node: "x"}}
			v, _ := events.Encode(e)
			return v // the next event's previous-hash no longer matches
		}, events.ErrChainBroken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, h := su.newLog(t)
			s := events.PoolStream("damaged")
			appendN(t, l, s, events.Version{}, 4, 4)
			evs, _ := readAll(t, l, s, 1, 0)
			h.Corrupt(s, 3, tc.value(evs[1].Hash))
			// Compact so that a watch from the start re-reads the stored (damaged) bytes
			// instead of replaying the original ones from history.
			_, now, err := l.Head(ctxT(t), s)
			if err != nil {
				t.Fatal(err)
			}
			h.Compact(now)
			n := 0
			_, err = l.Read(ctxT(t), s, 1, 0, func(*events.Event) error { n++; return nil })
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			msg := err.Error()
			if !strings.Contains(msg, string(s)) || !strings.Contains(msg, "#3") && !strings.Contains(msg, "#4") {
				t.Fatalf("error %q does not name the stream and sequence", msg)
			}
			if n > 3 {
				t.Fatalf("read delivered %d events past the damage", n)
			}
			// A watch delivers the error too, never a silently skipped event.
			ch := l.Watch(ctxT(t), events.WatchRequest{Prefixes: []string{"pool/"}, After: map[events.Stream]uint64{s: 2}})
			deadline := time.After(wait)
			for {
				select {
				case b, ok := <-ch:
					if !ok {
						t.Fatal("watch closed without an error")
					}
					if b.Err == nil {
						for _, e := range b.Events {
							if e.Seq >= 3 && !errors.Is(tc.want, events.ErrChainBroken) {
								t.Fatalf("watch delivered damaged %s #%d", e.Stream, e.Seq)
							}
						}
						continue
					}
					if !errors.Is(b.Err, tc.want) {
						t.Fatalf("watch error %v, want %v", b.Err, tc.want)
					}
					return
				case <-deadline:
					t.Fatal("watch delivered no error")
				}
			}
		})
	}
}

func (su suite) testInvalid(t *testing.T) {
	l, _ := su.newLog(t)
	ctx := ctxT(t)
	e := SampleEvent(0, &events.PoolDeleted{Name: "x"})
	for _, s := range []events.Stream{"", "pool", "pool/", "node/UPPER", "cluster/x", "other/x"} {
		if _, err := l.Append(ctx, events.AppendRequest{Stream: s, Events: []*events.Event{e}}); !errors.Is(err, events.ErrInvalidStream) {
			t.Errorf("append to %q: got %v, want ErrInvalidStream", s, err)
		}
	}
	if _, err := l.Append(ctx, events.AppendRequest{Stream: events.ClusterStream}); err == nil {
		t.Error("append of no events succeeded")
	}
	if _, err := l.Append(ctx, events.AppendRequest{Stream: events.ClusterStream, Events: []*events.Event{{Time: Base}}}); err == nil {
		t.Error("append of an event without payload succeeded")
	}
}
