package events_test

import (
	"context"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
)

func TestMemLogConformance(t *testing.T) {
	eventstest.Run(t, func(t *testing.T) (events.Log, eventstest.Harness) {
		t.Helper()
		l := events.NewMemLog()
		t.Cleanup(func() { _ = l.Close() })
		return l, l
	})
}

func TestMemLogFault(t *testing.T) {
	l := events.NewMemLog()
	defer l.Close()
	boom := errors.Mark(errors.New("injected"), events.ErrUnavailable)
	l.SetFault(func(op string) error {
		if op == "append" || op == "watch" {
			return boom
		}
		return nil
	})
	ctx := context.Background()
	_, err := l.Append(ctx, events.AppendRequest{Stream: events.ClusterStream,
		Events: []*events.Event{eventstest.SampleEvent(0, &events.PoolDeleted{Name: "x"})}})
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("append with fault: %v", err)
	}
	b, ok := <-l.Watch(ctx, events.WatchRequest{})
	if !ok || !errors.Is(b.Err, events.ErrUnavailable) {
		t.Fatalf("watch with fault: %v, %v", b, ok)
	}
	l.SetFault(nil)
	if _, err := l.Append(ctx, events.AppendRequest{Stream: events.ClusterStream,
		Events: []*events.Event{eventstest.SampleEvent(0, &events.PoolDeleted{Name: "x"})}}); err != nil {
		t.Fatal(err)
	}
}
