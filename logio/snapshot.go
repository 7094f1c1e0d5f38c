package logio

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// SnapshotAttempts bounds Snapshot's retries when the stream moves under it (a node
// stream has a live writer, its coild).
const SnapshotAttempts = 8

// SnapshotResult says what Snapshot did to a stream.
type SnapshotResult struct {
	Stream events.Stream `json:"stream"`
	// Seq is the snapshot event's sequence (the new one, or the existing one at the head).
	Seq uint64 `json:"seq"`
	// Skipped: the stream is empty or its last event is already a snapshot.
	Skipped bool `json:"skipped"`
	// Attempts is the number of appends tried (conflicts with the stream's writer retry).
	Attempts int `json:"attempts"`
}

// Snapshot appends a Snapshot event holding stream's projected state (read from its
// newest snapshot and folded) and so moves its snapshot pointer. On a conflict with the
// stream's writer it reads the new events and tries again, up to SnapshotAttempts times.
// Idempotent: a stream whose last event is a snapshot, or an empty one, is left alone.
func Snapshot(ctx context.Context, log events.Log, stream events.Stream, now func() time.Time, actor string) (SnapshotResult, error) {
	res := SnapshotResult{Stream: stream}
	st := projection.NewState()
	var lastWasSnap bool
	apply := func(e *events.Event) error {
		_, lastWasSnap = e.Payload.(*events.Snapshot)
		return st.Apply(e)
	}
	if _, err := events.ReadFrom(ctx, log, stream, 0, apply); err != nil {
		return res, errors.Wrapf(err, "read %s", stream)
	}
	for {
		head := st.Head(stream)
		if head.Seq == 0 || lastWasSnap {
			res.Seq, res.Skipped = head.Seq, true
			if head.Seq == 0 {
				res.Seq = 0
			}
			return res, nil
		}
		payload, err := projection.SnapshotOf(st.StreamState(stream))
		if err != nil {
			return res, errors.Wrapf(err, "snapshot of %s", stream)
		}
		res.Attempts++
		v, err := log.Append(ctx, events.AppendRequest{Stream: stream, Expected: head,
			Events: []*events.Event{{Time: now(), Actor: actor, Payload: payload}}})
		if err == nil {
			res.Seq = v.Seq
			return res, nil
		}
		if !errors.Is(err, events.ErrConflict) || res.Attempts >= SnapshotAttempts {
			return res, errors.Wrapf(err, "append snapshot to %s (attempt %d)", stream, res.Attempts)
		}
		// Catch up from the events missed, or by reading.
		var ce *events.ConflictError
		if errors.As(err, &ce) && len(ce.Missed) > 0 && ce.Missed[len(ce.Missed)-1].Seq == ce.Head.Seq {
			for _, e := range ce.Missed {
				if err := apply(e); err != nil {
					return res, errors.Wrapf(err, "catch up %s", stream)
				}
			}
			continue
		}
		if _, err := log.Read(ctx, stream, head.Seq+1, 0, apply); err != nil {
			return res, errors.Wrapf(err, "catch up %s", stream)
		}
	}
}
