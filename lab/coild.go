package lab

import (
	"context"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
)

// ErrCoildNotReady: a coild the lab started exited, or did not answer STATUS in time.
var ErrCoildNotReady = errors.New("lab: coild not ready")

// WaitCoild waits until the coild running as p answers STATUS on socket, for at most
// within. It fails early when p exits; the error names the last STATUS answer.
func WaitCoild(ctx context.Context, p *Process, socket string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	cl := cniproto.NewClient(socket, 2*time.Second)
	var last error
	for {
		if isDone(p.Done()) {
			return errors.Wrapf(ErrCoildNotReady, "coild exited (%v); log %s", p.Err(), p.LogPath)
		}
		if last = cl.Status(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Wrapf(ErrCoildNotReady, "%v (last STATUS: %v); log %s", ctx.Err(), last, p.LogPath)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
