package allocator

import (
	"context"
	"runtime/debug"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// ReplayWorkers is how many streams Replay reads at once: reading one stream while
// decoding another keeps both the store and the decoder busy.
const ReplayWorkers = 4

// Replay folds the given streams, each from sequence from(stream) (nil: 1; use
// events.StartSeq to start at the newest snapshot), all at store revision rev, into a new
// state. Streams are read
// concurrently, each into its own stream state; the first error stops the rest.
func Replay(ctx context.Context, log events.Log, streams []events.Stream, rev int64, from func(context.Context, events.Stream) (uint64, error)) (*projection.State, error) {
	defer relaxGC()()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		stream events.Stream
		state  *projection.State
		err    error
	}
	work := make(chan events.Stream)
	results := make(chan result, len(streams))
	var wg sync.WaitGroup
	for range min(ReplayWorkers, len(streams)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				st := projection.NewState()
				start := uint64(1)
				var err error
				if from != nil {
					start, err = from(ctx, s)
				}
				if err == nil {
					_, err = log.Read(ctx, s, start, rev, st.Apply)
				}
				if err != nil {
					cancel()
				}
				results <- result{stream: s, state: st, err: errors.Wrapf(err, "replay %s", s)}
			}
		}()
	}
	go func() {
		defer close(work)
		for _, s := range streams {
			select {
			case work <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	out := projection.NewState()
	var first error
	for r := range results {
		if r.err != nil {
			if first == nil || errors.Is(first, context.Canceled) {
				first = r.err
			}
			continue
		}
		out.Merge(r.stream, r.state)
	}
	if first != nil {
		return nil, first
	}
	return out, ctx.Err()
}

// ReplayGCPercent is the garbage collector's target while a replay runs. A replay
// allocates a lot of short-lived garbage (decoded events, store responses) over a small
// live heap, so the default target (100) collects very often; a higher target for the
// few seconds of a replay cuts its time by a quarter or more on this 2-core machine
// (docs/benchmarks.md) at the cost of a temporarily larger heap.
const ReplayGCPercent = 400

var gcMu sync.Mutex
var gcDepth, gcSaved int

// relaxGC raises the GC target for the duration of a replay; concurrent replays share it
// and the last one out restores the previous setting.
func relaxGC() (restore func()) {
	gcMu.Lock()
	if gcDepth == 0 {
		gcSaved = debug.SetGCPercent(ReplayGCPercent)
		if gcSaved > ReplayGCPercent || gcSaved < 0 {
			debug.SetGCPercent(gcSaved) // already more relaxed (or off): leave it
		}
	}
	gcDepth++
	gcMu.Unlock()
	return func() {
		gcMu.Lock()
		gcDepth--
		if gcDepth == 0 {
			debug.SetGCPercent(gcSaved)
		}
		gcMu.Unlock()
	}
}
