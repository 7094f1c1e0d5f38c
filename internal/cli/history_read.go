package cli

import (
	"context"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// errStopStream ends the read of one stream early (not a failure).
var errStopStream = errors.New("cli: stop reading stream")

// readStream reads stream s from its first event as of revision rev, feeding fn its
// events in sequence order; fn may return errStopStream to skip the rest of the stream.
func readStream(ctx context.Context, log events.Log, s events.Stream, rev int64, fn func(*events.Event) error) error {
	_, err := log.Read(ctx, s, 1, rev, fn)
	if err != nil && !errors.Is(err, errStopStream) {
		return errors.Wrapf(err, "read %s at revision %d", s, rev)
	}
	return nil
}
