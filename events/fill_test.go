package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
)

// TestFill: eventstest.Fill's streams read back as the log wrote them: every event in
// order, the hash chain intact (also where a fill continues a stream appended before),
// the heads stored and returned.
func TestFill(t *testing.T) {
	_, cli, lg := startEtcdLog(t, events.EtcdConfig{})
	ctx := t.Context()
	ev := func(s events.Stream) func(int) *events.Event {
		return func(i int) *events.Event {
			return &events.Event{Time: time.Unix(1_800_000_000+int64(i), 0).UTC(), Actor: "fill", Payload: &events.NodeRetired{Node: fmt.Sprintf("%s-%d", s, i)}}
		}
	}
	a, b, c := events.NodeStream("a"), events.NodeStream("b"), events.NodeStream("c")
	before, err := lg.Append(ctx, events.AppendRequest{Stream: c, Events: []*events.Event{ev(c)(-1)}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[events.Stream]int{a: 300, b: events.MaxBatch, c: 1 + 1000}
	heads, err := eventstest.Fill(ctx, cli, lg.Keys(), 3,
		eventstest.FillStream{Stream: a, N: 300, Next: ev(a)},
		eventstest.FillStream{Stream: b, N: events.MaxBatch, Next: ev(b)},
		eventstest.FillStream{Stream: c, Head: before, N: 1000, Next: ev(c)})
	if err != nil {
		t.Fatal(err)
	}
	stored, _, err := lg.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for k, s := range []events.Stream{a, b, c} {
		if heads[k] != stored[s] || heads[k].Seq != uint64(want[s]) {
			t.Fatalf("%s: Fill returned head %v, stored %v, want #%d", s, heads[k], stored[s], want[s])
		}
		n := 0
		if _, err := lg.Read(ctx, s, 1, 0, func(e *events.Event) error {
			i := int(e.Seq) - 1 - int(before.Seq) // the index Next was given
			if s != c {
				i = int(e.Seq) - 1
			}
			if got := e.Payload.(*events.NodeRetired).Node; got != fmt.Sprintf("%s-%d", s, i) {
				return fmt.Errorf("%s #%d is %s, want index %d", s, e.Seq, got, i)
			}
			n++
			return nil
		}); err != nil {
			t.Fatalf("read %s back: %v", s, err)
		}
		if n != want[s] {
			t.Fatalf("%s: read %d events, want %d", s, n, want[s])
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := eventstest.Fill(cctx, cli, lg.Keys(), 2, eventstest.FillStream{Stream: a, N: 10, Next: ev(a)}); err == nil {
		t.Fatal("Fill with a cancelled context succeeded")
	}
}
