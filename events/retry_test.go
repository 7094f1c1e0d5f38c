package events_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/coil-net/coil/events"
)

func TestRetry(t *testing.T) {
	errFatal := errors.New("fatal")
	t.Run("transient errors are tried again until success", func(t *testing.T) {
		var waits []int
		calls := 0
		tries, err := events.Retry(context.Background(), events.RetryPolicy{
			FirstWait: time.Millisecond, MaxWait: 4 * time.Millisecond,
			OnRetry: func(attempt int, _ error, left time.Duration) {
				waits = append(waits, attempt)
				if left != 0 {
					t.Errorf("left %s without a deadline; want 0", left)
				}
			},
		}, func(context.Context) error {
			calls++
			if calls < 4 {
				return rpctypes.ErrGRPCNoLeader // etcd's "not now"
			}
			return nil
		})
		if err != nil || tries != 4 || len(waits) != 3 {
			t.Fatalf("Retry = %d tries, %v, %d retries; want 4, nil, 3", tries, err, len(waits))
		}
	})
	t.Run("other errors end it at once, unwrapped", func(t *testing.T) {
		tries, err := events.Retry(context.Background(), events.RetryPolicy{FirstWait: time.Millisecond},
			func(context.Context) error { return errFatal })
		if tries != 1 || err != errFatal { //nolint:errorlint // returned as it is
			t.Fatalf("Retry = %d, %v; want 1, the error itself", tries, err)
		}
	})
	t.Run("the policy's classifier decides", func(t *testing.T) {
		calls := 0
		tries, err := events.Retry(context.Background(), events.RetryPolicy{
			FirstWait: time.Millisecond,
			Retryable: func(err error) bool { return errors.Is(err, events.ErrUnavailable) },
		}, func(context.Context) error {
			calls++
			if calls == 1 {
				return errors.Mark(errors.New("try again"), events.ErrUnavailable)
			}
			return rpctypes.ErrGRPCNoLeader // transient for etcd, not for this policy
		})
		if tries != 2 || !errors.Is(err, rpctypes.ErrGRPCNoLeader) {
			t.Fatalf("Retry = %d, %v; want 2, the second error", tries, err)
		}
	})
	t.Run("it gives up at the deadline with the last error", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		tries, err := events.Retry(ctx, events.RetryPolicy{FirstWait: 5 * time.Millisecond, MaxWait: 10 * time.Millisecond, Attempt: time.Second},
			func(actx context.Context) error {
				if d, ok := actx.Deadline(); !ok || time.Until(d) > 50*time.Millisecond {
					t.Errorf("a try's deadline %v is past the call's", d)
				}
				return rpctypes.ErrGRPCNoLeader
			})
		if tries < 2 || !errors.Is(err, rpctypes.ErrGRPCNoLeader) || !strings.Contains(err.Error(), "gave up after") {
			t.Fatalf("Retry = %d, %v; want >= 2 tries and the last error, given up", tries, err)
		}
	})
	t.Run("each try is bounded by Attempt", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		calls := 0
		_, err := events.Retry(ctx, events.RetryPolicy{Attempt: 10 * time.Millisecond, FirstWait: time.Millisecond},
			func(actx context.Context) error {
				calls++
				if calls == 1 {
					<-actx.Done() // a member that does not answer
					return actx.Err()
				}
				return nil
			})
		if err != nil || calls != 2 {
			t.Fatalf("Retry = %v after %d calls; want nil after 2 (the hung try timed out and was tried again)", err, calls)
		}
	})
}
