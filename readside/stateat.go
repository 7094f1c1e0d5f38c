package readside

import (
	"context"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// ErrFutureRevision: a point names a revision the log has not reached.
var ErrFutureRevision = errors.New("readside: revision in the future")

// Point is a moment of the log: an etcd revision, or a time.
type Point struct {
	// Rev > 0: the state right after the event(s) committed at this revision.
	Rev int64
	// Time, when Rev is 0: the state after every event stamped at or before it.
	Time time.Time
	// Label, when set, prefixes the errors about this point (StatesAt).
	Label string
}

// Includes reports whether e is at or before the point.
func (p Point) Includes(e *events.Event) bool {
	if p.Rev > 0 {
		return e.Revision <= p.Rev
	}
	return !e.Time.After(p.Time)
}

// NotBefore reports whether e is at or after the point.
func (p Point) NotBefore(e *events.Event) bool {
	if p.Rev > 0 {
		return e.Revision >= p.Rev
	}
	return !e.Time.Before(p.Time)
}

// String is "revision N" or the time in RFC 3339 (with fractions of a second if any).
func (p Point) String() string {
	if p.Rev > 0 {
		return "revision " + strconv.FormatInt(p.Rev, 10)
	}
	return p.Time.Format(time.RFC3339Nano)
}

// StateAt is the whole state as it was at a point, with the revision and time it
// reflects.
type StateAt struct {
	// State is the state; its Rev is the point's revision, or for a time the revision
	// of the newest event folded.
	State
	// Current is the revision the log was read at.
	Current int64
	// Time is the time of the newest event folded (zero for an empty state).
	Time time.Time
	// ReadAtRevision tells whether etcd was read at the point's revision (else the
	// events were read at Current and folded up to the point).
	ReadAtRevision bool
}

// StatesAt folds every stream up to each of points, all against the log at one current
// revision. A revision still in etcd's history is read at that revision; a compacted
// one, or a time, is read at the current revision and each stream folded through its
// last event at or before the point (the same state while no events were archived).
// With archive files, the latter are folded from the archived events first (one pass
// over the files for all such points: logio.ReadArchives) and continued with the live
// log; streams the archives do not hold fold as without them. A moment before a stream's
// oldest stored snapshot needs the archives (else an error matching
// events.ErrCompacted). A revision after the current one is ErrFutureRevision. Errors
// about one point are wrapped with its Label.
func StatesAt(ctx context.Context, log events.Log, points []Point, archives []string) ([]*StateAt, error) {
	label := func(i int, err error) error {
		if points[i].Label != "" {
			return errors.Wrap(err, points[i].Label)
		}
		return err
	}
	_, current, err := log.Streams(ctx, "cluster", 0)
	if err != nil {
		return nil, errors.Wrap(err, "read the log's revision")
	}
	out := make([]*StateAt, len(points))
	var folded []int // the points folded up to from the current log
	for i, p := range points {
		if p.Rev > current {
			return nil, label(i, errors.Mark(errors.Newf("revision %d is in the future: the log is at revision %d", p.Rev, current), ErrFutureRevision))
		}
		if p.Rev > 0 {
			res, ferr := foldStreams(ctx, log, p.Rev, nil)
			switch {
			case ferr == nil:
				out[i] = &StateAt{State: State{State: res.state, Rev: p.Rev}, Current: current,
					Time: unixTime(res.lastTime), ReadAtRevision: true}
				continue
			case !errors.Is(ferr, events.ErrCompacted):
				return nil, label(i, ferr)
			}
			// etcd compacted that revision away: fold the current log up to it.
		}
		folded = append(folded, i)
	}
	if len(folded) == 0 {
		return out, nil
	}
	res := make([]*foldResult, len(folded))
	if len(archives) == 0 {
		for k, i := range folded {
			if res[k], err = foldStreams(ctx, log, current, points[i].Includes); err != nil {
				return nil, label(i, err)
			}
		}
	} else {
		keeps := make([]func(*events.Event) bool, len(folded))
		for k, i := range folded {
			keeps[k] = points[i].Includes
		}
		if res, err = foldArchived(ctx, log, current, keeps, archives); err != nil {
			if len(folded) == 1 {
				return nil, label(folded[0], err)
			}
			return nil, err
		}
	}
	for k, i := range folded {
		rev := points[i].Rev
		if rev == 0 {
			rev = res[k].lastRev
		}
		out[i] = &StateAt{State: State{State: res[k].state, Rev: rev}, Current: current, Time: unixTime(res[k].lastTime)}
	}
	return out, nil
}

// LoadAt is StatesAt of one point.
func LoadAt(ctx context.Context, log events.Log, p Point, archives []string) (*StateAt, error) {
	sts, err := StatesAt(ctx, log, []Point{p}, archives)
	if err != nil {
		return nil, err
	}
	return sts[0], nil
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
