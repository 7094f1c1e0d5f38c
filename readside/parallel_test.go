package readside_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/readside"
)

// TestParallel: every index is visited once, at most workers at a time; no work is no
// error.
func TestParallel(t *testing.T) {
	for _, workers := range []int{0, 1, 3} {
		var mu sync.Mutex
		seen := map[int]int{}
		var running, most atomic.Int32
		err := readside.Parallel(t.Context(), workers, 50, func(_ context.Context, i int) error {
			r := running.Add(1)
			defer running.Add(-1)
			for {
				m := most.Load()
				if r <= m || most.CompareAndSwap(m, r) {
					break
				}
			}
			mu.Lock()
			seen[i]++
			mu.Unlock()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 50 {
			t.Fatalf("workers %d: visited %d indexes, want 50", workers, len(seen))
		}
		for i, n := range seen {
			if n != 1 {
				t.Fatalf("workers %d: index %d visited %d times", workers, i, n)
			}
		}
		limit := int32(workers)
		if workers < 1 {
			limit = int32(readside.Workers())
		}
		if most.Load() > limit {
			t.Fatalf("workers %d: %d ran at once", workers, most.Load())
		}
	}
	if err := readside.Parallel(t.Context(), 0, 0, func(context.Context, int) error { return errors.New("called") }); err != nil {
		t.Fatalf("no work: %v", err)
	}
}

// TestParallelFirstError: the first failure cancels the rest and is the error returned,
// also when the calls it cancelled return first; a cancelled parent context is an error.
func TestParallelFirstError(t *testing.T) {
	boom := errors.New("boom")
	var after atomic.Int32
	err := readside.Parallel(t.Context(), 2, 100, func(ctx context.Context, i int) error {
		switch i {
		case 0:
			<-ctx.Done() // cancelled by index 1's failure; returns its own error first
			return errors.Wrap(ctx.Err(), "index 0")
		case 1:
			return boom
		}
		after.Add(1)
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	if n := after.Load(); n > 2 {
		t.Fatalf("%d calls ran after the failure", n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = readside.Parallel(ctx, 2, 10, func(context.Context, int) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled parent: got %v", err)
	}
}
