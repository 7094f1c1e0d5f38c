package readside

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logio"
	"github.com/coil-net/coil/projection"
)

// errStopStream ends the read of one stream early (not a failure).
var errStopStream = errors.New("readside: stop reading stream")

// errNeedsArchive marks errArchived's errors (besides events.ErrCompacted), so they are
// returned as they are, not wrapped again.
var errNeedsArchive = errors.New("readside: archived events needed")

// foldResult is a state folded from a prefix of every stream.
type foldResult struct {
	state *projection.State
	// lastRev and lastTime are the newest revision and time among the events folded.
	lastRev  int64
	lastTime int64 // unix nanoseconds; 0 when nothing was folded
}

// streamFold is the fold of one stream.
type streamFold struct {
	state    any // *projection.Cluster, *projection.Blocks or *projection.Node; nil if empty
	lastRev  int64
	lastTime int64
}

// streamFolder folds the events of one stream it is fed, in sequence order, through the
// events keep accepts (nil: all), and ignores every event from the first it rejects on.
type streamFolder struct {
	f     streamFold
	keep  func(*events.Event) bool
	apply func(*events.Event) error
	// first is the first event fed (nil: none yet).
	first *events.Event
	// done: keep rejected an event, the fold is complete.
	done bool
	// needEarlier: the first event fed was neither #1 nor a snapshot keep accepts, so
	// the fold needs events before it.
	needEarlier bool
}

func newStreamFolder(s events.Stream, keep func(*events.Event) bool) *streamFolder {
	sf := &streamFolder{keep: keep}
	f := &sf.f
	switch kind, _ := s.Kind(); kind {
	case "cluster":
		c := projection.NewCluster()
		sf.apply = func(e *events.Event) error { f.state = c; return c.Apply(e) }
	case "pool", "block":
		b := projection.NewBlocks()
		sf.apply = func(e *events.Event) error { f.state = b; return b.Apply(e) }
	default:
		n := projection.NewNode()
		sf.apply = func(e *events.Event) error { f.state = n; return n.Apply(e) }
	}
	return sf
}

// visit folds e, the stream's next event; it returns errStopStream once the fold is
// complete or cannot start (needEarlier).
func (sf *streamFolder) visit(e *events.Event) error {
	if sf.done {
		return errStopStream
	}
	accepted := sf.keep == nil || sf.keep(e)
	if sf.first == nil {
		sf.first = e
		if _, snap := e.Payload.(*events.Snapshot); e.Seq > 1 && (!snap || !accepted) {
			sf.needEarlier, sf.done = true, true
			return errStopStream
		}
	}
	if !accepted {
		sf.done = true
		return errStopStream
	}
	if err := sf.apply(e); err != nil {
		return errors.Wrapf(err, "fold %s #%d", e.Stream, e.Seq)
	}
	sf.f.lastRev = max(sf.f.lastRev, e.Revision)
	sf.f.lastTime = max(sf.f.lastTime, e.Time.UnixNano())
	return nil
}

// errArchived is the error of a fold of stream s that needs the events before first,
// which were archived: it matches events.ErrCompacted and says to pass the archive.
func errArchived(s events.Stream, first *events.Event) error {
	err := errors.Newf("%s: events before #%d (%s) were archived and are needed here; pass the archive file with --archive FILE (the file 'coilctl log archive' wrote)",
		s, first.Seq, fmtTime(first.Time))
	return errors.Mark(errors.Mark(err, events.ErrCompacted), errNeedsArchive)
}

// fmtTime is a time in errors: UTC, seconds.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// foldStream folds stream s as read at rev from sequence from, through the events keep
// accepts (nil: all), stopping at the first it rejects. A first event (from > 1) that
// keep rejects, or that is not a snapshot, fails with errArchived. The log's errors are
// returned as they are (the callers say what they were doing).
func foldStream(ctx context.Context, log events.Log, s events.Stream, from uint64, rev int64, keep func(*events.Event) bool) (*streamFold, error) {
	sf := newStreamFolder(s, keep)
	_, err := log.Read(ctx, s, from, rev, sf.visit)
	if err != nil && !errors.Is(err, errStopStream) {
		return nil, err
	}
	if sf.needEarlier {
		return nil, errArchived(s, sf.first)
	}
	return &sf.f, nil
}

// foldAll folds each of streams with fold, workers at once (Parallel), each into its own
// state, and gathers them into one.
func foldAll(ctx context.Context, workers int, streams []events.Stream,
	fold func(context.Context, events.Stream) (*streamFold, error)) (*foldResult, error) {
	folds := make([]*streamFold, len(streams))
	err := Parallel(ctx, workers, len(streams), func(ctx context.Context, i int) error {
		var err error
		folds[i], err = fold(ctx, streams[i])
		return err
	})
	if err != nil {
		return nil, err
	}
	return gatherFolds(streams, folds), nil
}

// foldLive folds stream s of the live log, as read at rev, through the events keep
// accepts (nil: all): with keep nil from its newest snapshot (events.StartSeq);
// otherwise from #1, or, where older events were archived, from the newest snapshot if
// keep accepts it, else from the oldest stored event (the snapshot the last archive
// kept) if keep accepts that (else errArchived: the archive is needed).
func foldLive(ctx context.Context, log events.Log, s events.Stream, rev int64, keep func(*events.Event) bool) (*streamFold, error) {
	var from uint64 = 1
	var err error
	if keep == nil {
		if from, err = events.StartSeq(ctx, log, s, rev); err != nil {
			return nil, errors.Wrapf(err, "snapshot of %s at revision %d", s, rev)
		}
	}
	f, err := foldStream(ctx, log, s, from, rev, keep)
	if errors.Is(err, events.ErrCompacted) && from == 1 {
		if from, err = events.StartSeq(ctx, log, s, rev); err != nil {
			return nil, errors.Wrapf(err, "snapshot of %s at revision %d", s, rev)
		}
		f, err = foldStream(ctx, log, s, from, rev, keep)
		if errors.Is(err, events.ErrCompacted) && from > 1 {
			// The newest snapshot is after the point: an older one may still be stored.
			oldest, ok, oerr := oldestStored(ctx, log, s, rev)
			if oerr != nil {
				return nil, oerr
			}
			if ok && oldest > 1 && oldest < from {
				f, err = foldStream(ctx, log, s, oldest, rev, keep)
			}
		}
	}
	if err != nil && !errors.Is(err, errNeedsArchive) {
		return nil, errors.Wrapf(err, "fold %s at revision %d", s, rev)
	}
	return f, err
}

// OldestStorer is implemented by logs that can tell the oldest event of a stream still
// stored (events.EtcdLog: a snapshot once older events were archived). A log that wraps
// another should forward it, returning 0 when the log it wraps cannot tell.
type OldestStorer interface {
	OldestStored(ctx context.Context, s events.Stream, rev int64) (seq uint64, readRev int64, err error)
}

// oldestStored returns the sequence of stream s's oldest event still stored at rev
// (OldestStorer), and false when log cannot tell.
func oldestStored(ctx context.Context, log events.Log, s events.Stream, rev int64) (uint64, bool, error) {
	o, ok := log.(OldestStorer)
	if !ok {
		return 0, false, nil
	}
	seq, _, err := o.OldestStored(ctx, s, rev)
	if err != nil {
		return 0, false, errors.Wrapf(err, "oldest stored event of %s at revision %d", s, rev)
	}
	return seq, seq > 0, nil
}

// foldStreams reads every stream at rev (0: the latest) and folds, per stream, the events
// accepted by keep, stopping a stream at its first event keep rejects (so each stream's
// state is a prefix of the stream, as a fold needs): foldLive. Streams are folded
// concurrently (Workers), each into its own state.
func foldStreams(ctx context.Context, log events.Log, rev int64, keep func(*events.Event) bool) (*foldResult, error) {
	heads, rev, err := log.Streams(ctx, "", rev)
	if err != nil {
		return nil, errors.Wrap(err, "list streams")
	}
	return foldAll(ctx, 0, StreamsOf(heads, nil), func(ctx context.Context, s events.Stream) (*streamFold, error) {
		return foldLive(ctx, log, s, rev, keep)
	})
}

// foldArchived folds every stream, per keep (one state each), through the events keep
// accepts, reading the archive files first (logio.ReadArchives: any order, verified as
// one chain per stream, in one pass for all keeps) and then the live log at rev (0: the
// latest). A stream the archives hold is folded from their first event of it (#1, or a
// snapshot keep accepts; else the archives lack earlier events: ErrArchiveGap) and
// continued with the live log from the event after their last, whose join to them is
// checked (logio.Archives.Join, JoinHead; the live log read only while some keep still
// accepts). A stream they do not hold is folded as foldStreams does (foldLive).
func foldArchived(ctx context.Context, log events.Log, rev int64, keeps []func(*events.Event) bool, archives []string) ([]*foldResult, error) {
	heads, rev, err := log.Streams(ctx, "", rev)
	if err != nil {
		return nil, errors.Wrap(err, "list streams")
	}
	archived := map[events.Stream][]*streamFolder{}
	arch, err := logio.ReadArchives(ctx, archives, func(e *events.Event) error {
		sfs := archived[e.Stream]
		if sfs == nil {
			for _, keep := range keeps {
				sfs = append(sfs, newStreamFolder(e.Stream, keep))
			}
			archived[e.Stream] = sfs
		}
		for _, sf := range sfs {
			if verr := sf.visit(e); verr != nil && !errors.Is(verr, errStopStream) {
				return verr
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for s := range arch.Streams() {
		if _, ok := heads[s]; !ok {
			return nil, arch.JoinHead(s, events.Version{})
		}
	}
	streams := StreamsOf(heads, nil)
	folds := make([][]*streamFold, len(keeps))
	for k := range folds {
		folds[k] = make([]*streamFold, len(streams))
	}
	err = Parallel(ctx, 0, len(streams), func(ctx context.Context, i int) error {
		s := streams[i]
		sfs := archived[s]
		if arch.Last(s).Seq == 0 || len(sfs) == 0 {
			for k, keep := range keeps {
				f, ferr := foldLive(ctx, log, s, rev, keep)
				if ferr != nil {
					return ferr
				}
				folds[k][i] = f
			}
			return nil
		}
		for _, sf := range sfs {
			if sf.needEarlier {
				if ferr := arch.CheckFrom(s); ferr != nil {
					return ferr
				}
				return errArchived(s, sf.first) // (the archives start at #1: not reached)
			}
		}
		if ferr := continueLive(ctx, log, s, heads[s], rev, arch, sfs); ferr != nil {
			return ferr
		}
		for k, sf := range sfs {
			folds[k][i] = &sf.f
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*foldResult, len(keeps))
	for k := range keeps {
		out[k] = gatherFolds(streams, folds[k])
	}
	return out, nil
}

// continueLive feeds the folders of stream s (head at rev), fed the archives' events of
// s, the live events after the archives' last, while some folder is not done; the first
// is checked to join the archives (logio.Archives.Join; JoinHead when the live log has
// none), even when no folder needs it. The live log's ErrCompacted (a later archive is
// missing) is logio.Archives.Gap.
func continueLive(ctx context.Context, log events.Log, s events.Stream, head events.Version, rev int64, arch *logio.Archives, sfs []*streamFolder) error {
	last := arch.Last(s)
	if head.Seq <= last.Seq {
		return arch.JoinHead(s, head)
	}
	joined := false
	_, err := log.Read(ctx, s, last.Seq+1, rev, func(e *events.Event) error {
		if !joined {
			if err := arch.Join(e); err != nil {
				return err
			}
			joined = true
		}
		open := false
		for _, sf := range sfs {
			if sf.done {
				continue
			}
			if err := sf.visit(e); err != nil && !errors.Is(err, errStopStream) {
				return err
			}
			open = open || !sf.done
		}
		if !open {
			return errStopStream
		}
		return nil
	})
	switch {
	case err == nil, errors.Is(err, errStopStream):
		return nil
	case errors.Is(err, events.ErrCompacted):
		return arch.Gap(s, err)
	case errors.Is(err, logio.ErrBroken):
		return err
	}
	return errors.Wrapf(err, "fold %s at revision %d", s, rev)
}

// gatherFolds puts the folds of streams (folds[i] of streams[i]) into one state.
func gatherFolds(streams []events.Stream, folds []*streamFold) *foldResult {
	res := &foldResult{state: projection.NewState()}
	for i, s := range streams {
		_, name := s.Kind()
		f := folds[i]
		switch st := f.state.(type) {
		case *projection.Cluster:
			res.state.Cluster = st
		case *projection.Blocks:
			if pool, idx, ok := s.Block(); ok {
				res.state.BlockStreams[projection.BlockRef{Pool: pool, Index: idx}] = st
			} else {
				res.state.Pools[name] = st
			}
		case *projection.Node:
			res.state.Nodes[name] = st
		}
		res.lastRev = max(res.lastRev, f.lastRev)
		res.lastTime = max(res.lastTime, f.lastTime)
	}
	return res
}
