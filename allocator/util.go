package allocator

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/cockroachdb/errors"
)

// MaxRetries bounds how often a decision is retried after losing a race.
const MaxRetries = 32

// backoff is a bounded, jittered backoff for lost races: it waits a random time in
// [0, 250µs·2^n) capped at 4 ms, and gives up after MaxRetries attempts. The cap is low
// on purpose: a loser that waits long while the winner goes straight on starves under
// sustained contention; short random waits only need to break the lockstep.
type backoff struct{ n int }

func (b *backoff) wait(ctx context.Context) error {
	b.n++
	if b.n > MaxRetries {
		return errors.Wrapf(ErrRetries, "gave up after %d attempts", MaxRetries)
	}
	ceil := 250 * time.Microsecond << min(b.n, 4)
	t := time.NewTimer(time.Duration(rand.Int64N(int64(ceil))))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errors.Wrap(ctx.Err(), "waiting to retry")
	}
}
