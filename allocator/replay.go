package allocator

import (
	"context"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// ReplayWorkers is how many streams Replay reads at once: reading one stream while
// decoding another keeps both the store and the decoder busy.
const ReplayWorkers = 4

// Replay folds the given streams, each from sequence from(stream) (1, or the stream's
// newest snapshot), all at store revision rev, into a new state. Streams are read
// concurrently, each into its own stream state; the first error stops the rest.
func Replay(ctx context.Context, log events.Log, streams []events.Stream, rev int64, from func(events.Stream) uint64) (*projection.State, error) {
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
				if from != nil {
					start = from(s)
				}
				_, err := log.Read(ctx, s, start, rev, st.Apply)
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
