package cli

import (
	"context"
	"runtime"
	"sort"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// errStopStream ends the read of one stream early (not a failure).
var errStopStream = errors.New("cli: stop reading stream")

// readWorkers is how many streams are read at once: one per core (etcd's range reads,
// decoding and hashing are all CPU-bound), at least 2.
func readWorkers() int { return max(2, runtime.GOMAXPROCS(0)) }

// parallel calls fn(ctx, i) for i in [0, n), readWorkers at once. The first error
// cancels the others' context and is returned.
func parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(readWorkers(), max(1, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	return errors.Wrap(ctx.Err(), "read streams")
}

// eachStream reads every stream of streams from its first event as of revision rev, with
// readWorkers streams in flight at once. visit is called once per stream (from any
// goroutine) and returns the callback for that stream's events, which are delivered in
// sequence order by a single goroutine; the callback may return errStopStream to skip
// the rest of the stream. The first error stops everything.
func eachStream(ctx context.Context, log events.Log, streams []events.Stream, rev int64,
	visit func(i int, s events.Stream) func(*events.Event) error) error {
	return parallel(ctx, len(streams), func(ctx context.Context, i int) error {
		s := streams[i]
		_, err := log.Read(ctx, s, 1, rev, visit(i, s))
		if err != nil && !errors.Is(err, errStopStream) {
			return errors.Wrapf(err, "read %s at revision %d", s, rev)
		}
		return nil
	})
}

// streamsOf lists the streams of heads accepted by keep, sorted by name.
func streamsOf(heads map[events.Stream]events.Version, keep func(events.Stream) bool) []events.Stream {
	out := make([]events.Stream, 0, len(heads))
	for s := range heads {
		if keep == nil || keep(s) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

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

// foldStream folds stream s as read at rev from sequence from, through the events keep
// accepts (nil: all), stopping at the first it rejects.
func foldStream(ctx context.Context, log events.Log, s events.Stream, from uint64, rev int64, keep func(*events.Event) bool) (*streamFold, error) {
	f := &streamFold{}
	kind, _ := s.Kind()
	var apply func(*events.Event) error
	switch kind {
	case "cluster":
		c := projection.NewCluster()
		apply = func(e *events.Event) error { f.state = c; return c.Apply(e) }
	case "pool":
		b := projection.NewBlocks()
		apply = func(e *events.Event) error { f.state = b; return b.Apply(e) }
	default:
		n := projection.NewNode()
		apply = func(e *events.Event) error { f.state = n; return n.Apply(e) }
	}
	_, err := log.Read(ctx, s, from, rev, func(e *events.Event) error {
		if keep != nil && !keep(e) {
			if f.state == nil && e.Seq == from && from > 1 {
				return errors.Wrapf(events.ErrCompacted, "%s: events before #%d (%s) were archived and are needed here; restore them from the archive", s, from, fmtTime(e.Time))
			}
			return errStopStream
		}
		if err := apply(e); err != nil {
			return errors.Wrapf(err, "fold %s #%d", e.Stream, e.Seq)
		}
		f.lastRev = max(f.lastRev, e.Revision)
		f.lastTime = max(f.lastTime, e.Time.UnixNano())
		return nil
	})
	if err != nil && !errors.Is(err, errStopStream) {
		return nil, errors.Wrapf(err, "fold %s at revision %d", s, rev)
	}
	return f, nil
}

// foldStreams reads every stream at rev (0: the latest) and folds, per stream, the events
// accepted by keep, stopping a stream at its first event keep rejects (so each stream's
// state is a prefix of the stream, as a fold needs). With keep nil every stream is folded
// from its newest snapshot (events.StartSeq); otherwise from #1, or, where older events
// were archived, from the newest snapshot if keep accepts it. Streams are folded
// concurrently, each into its own state.
func foldStreams(ctx context.Context, log events.Log, rev int64, keep func(*events.Event) bool) (*foldResult, error) {
	heads, rev, err := log.Streams(ctx, "", rev)
	if err != nil {
		return nil, errors.Wrap(err, "list streams")
	}
	streams := streamsOf(heads, nil)
	folds := make([]*streamFold, len(streams))
	err = parallel(ctx, len(streams), func(ctx context.Context, i int) error {
		s := streams[i]
		var from uint64 = 1
		var serr error
		if keep == nil {
			if from, serr = events.StartSeq(ctx, log, s, rev); serr != nil {
				return errors.Wrapf(serr, "snapshot of %s at revision %d", s, rev)
			}
		}
		f, serr := foldStream(ctx, log, s, from, rev, keep)
		if errors.Is(serr, events.ErrCompacted) && from == 1 {
			if from, serr = events.StartSeq(ctx, log, s, rev); serr != nil {
				return errors.Wrapf(serr, "snapshot of %s at revision %d", s, rev)
			}
			f, serr = foldStream(ctx, log, s, from, rev, keep)
		}
		folds[i] = f
		return serr
	})
	if err != nil {
		return nil, err
	}
	res := &foldResult{state: projection.NewState()}
	for i, s := range streams {
		_, name := s.Kind()
		f := folds[i]
		switch st := f.state.(type) {
		case *projection.Cluster:
			res.state.Cluster = st
		case *projection.Blocks:
			res.state.Pools[name] = st
		case *projection.Node:
			res.state.Nodes[name] = st
		}
		res.lastRev = max(res.lastRev, f.lastRev)
		res.lastTime = max(res.lastTime, f.lastTime)
	}
	return res, nil
}
