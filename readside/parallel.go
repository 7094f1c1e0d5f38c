package readside

import (
	"context"
	"runtime"
	"sort"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// Workers is how many streams the queries read at once: one per core (etcd's range
// reads, decoding and hashing are all CPU-bound), at least 2.
func Workers() int { return max(2, runtime.GOMAXPROCS(0)) }

// Parallel calls fn(ctx, i) for i in [0, n), workers at once (Workers() when workers < 1).
// The first error cancels the others' context and is returned; an error of a call that
// only saw the cancellation (context.Canceled) gives way to a real one.
func Parallel(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	if workers < 1 {
		workers = Workers()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range min(workers, max(1, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				err := fn(ctx, i)
				if err == nil {
					continue
				}
				mu.Lock()
				if first == nil || (errors.Is(first, context.Canceled) && !errors.Is(err, context.Canceled)) {
					first = err
				}
				mu.Unlock()
				cancel()
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

// StreamsOf lists the streams of heads that keep accepts (nil: all), sorted by name.
func StreamsOf(heads map[events.Stream]events.Version, keep func(events.Stream) bool) []events.Stream {
	out := make([]events.Stream, 0, len(heads))
	for s := range heads {
		if keep == nil || keep(s) {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
