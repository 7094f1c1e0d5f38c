package allocator

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// DefaultAttemptTimeout bounds one try of an append or a catch-up read; tries repeat
// until the request's deadline (AppendTimeout). A try can hang far longer than etcd
// takes to recover: a member whose leader died holds a forwarded proposal until its own
// request timeout (5 s + 2 election timeouts, 7 s with etcd's default timings) before
// it answers "request timed out, possibly due to previous leader failure".
const DefaultAttemptTimeout = 2 * time.Second

// Waits between tries after a try-again error: from retryFirstWait, doubling, at most
// retryMaxWait (etcd's elections take 0.2-2 s).
const (
	retryFirstWait = 25 * time.Millisecond
	retryMaxWait   = 400 * time.Millisecond
)

// answerGrace is how long past a request's deadline its caller still waits for the
// committer's own answer (which carries the store's error) before giving up on it.
const answerGrace = time.Second

// storeRetry runs f until it succeeds, fails with anything but a try-again error of the
// store (events.ErrUnavailable), or the deadline passes: ctx's, or AppendTimeout from
// now if that comes first. Each try gets at most AttemptTimeout. Retrying is safe for
// every write the allocator makes: an append is conditioned on the stream head (and
// its guards), so a try whose outcome was unknown (it timed out, yet committed) makes
// the next one conflict, and the caller catches up and finds its own events.
func (n *Node) storeRetry(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.AppendTimeout)
	defer cancel()
	start := time.Now()
	tries, err := events.Retry(ctx, events.RetryPolicy{
		Attempt: n.cfg.AttemptTimeout, FirstWait: retryFirstWait, MaxWait: retryMaxWait,
		Retryable: func(err error) bool { return errors.Is(err, events.ErrUnavailable) },
		OnRetry: func(attempt int, err error, left time.Duration) {
			if attempt == 1 {
				n.log.Warn("etcd did not answer; retrying until the request's deadline", "deadline", left.Round(time.Millisecond), "err", err)
			}
		},
	}, f)
	if err == nil && tries > 1 {
		n.log.Info("etcd answered again", "attempts", tries, "after", time.Since(start).Round(time.Millisecond))
	}
	return err
}

// expired is the answer to a request that waited in the queue past its deadline.
func expired(o *op) error {
	return errors.Mark(errors.Newf("allocator: request not decided within its deadline (%s ago): etcd slow or unreachable; try again",
		time.Since(o.deadline).Round(time.Millisecond)), events.ErrUnavailable)
}

// batchDeadline is the earliest deadline of the batch's requests: its append is not
// tried after one of them stopped waiting.
func batchDeadline(p *pending) time.Time {
	var d time.Time
	for _, ws := range p.waiters {
		for _, o := range ws {
			if d.IsZero() || o.deadline.Before(d) {
				d = o.deadline
			}
		}
	}
	return d
}
