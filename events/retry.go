package events

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"
)

// RetryPolicy says how Retry tries a call to the store again.
type RetryPolicy struct {
	// Attempt bounds one try (0: a try runs until ctx ends).
	Attempt time.Duration
	// FirstWait is the wait after the first failed try; each later wait doubles, up to
	// MaxWait (0: FirstWait every time). No wait is longer than half the time left.
	FirstWait, MaxWait time.Duration
	// Retryable says which errors are tried again (nil: Transient, etcd's own "not
	// now" answers). Any other error ends Retry at once, returned as it is.
	Retryable func(error) bool
	// OnRetry, if set, is called before each wait with the try that failed (1, 2, ...),
	// its error and the time left until ctx's deadline (0: none).
	OnRetry func(attempt int, err error, left time.Duration)
}

// Retry runs f until it succeeds, fails with an error the policy does not retry, or ctx
// ends (its deadline passes, or the caller cancels it). It returns the tries made and,
// when it gave up on a retryable error, that error wrapped with the tries and the time
// spent. The one place that decides how Coil tries the store again: the allocator's
// appends and reads (allocator.storeRetry), coild's session start (lease, liveness key).
func Retry(ctx context.Context, p RetryPolicy, f func(context.Context) error) (int, error) {
	retryable := p.Retryable
	if retryable == nil {
		retryable = Transient
	}
	start := time.Now()
	wait := p.FirstWait
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if p.Attempt > 0 {
			actx, cancel = context.WithTimeout(ctx, p.Attempt)
		}
		err := f(actx)
		cancel()
		if err == nil || !retryable(err) {
			return attempt, err
		}
		left := time.Duration(0)
		if d, ok := ctx.Deadline(); ok {
			left = time.Until(d)
		}
		if ctx.Err() != nil || (left != 0 && left <= p.FirstWait) {
			return attempt, errors.Wrapf(err, "gave up after %d tries in %s", attempt, time.Since(start).Round(time.Millisecond))
		}
		if p.OnRetry != nil {
			p.OnRetry(attempt, err, left)
		}
		w := wait
		if left != 0 {
			w = min(w, left/2)
		}
		t := time.NewTimer(w)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if p.MaxWait > wait {
			wait = min(2*wait, p.MaxWait)
		}
	}
}
