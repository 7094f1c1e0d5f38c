package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
)

// An append that failed because etcd has no quorum (or is unreachable, or the append's
// deadline passed) is CNI "try again" (11), with etcd's advice in the details.
func TestCNIErrorEtcdUnavailableIsTryAgain(t *testing.T) {
	// The shape allocator.Node returns when its append times out without a quorum.
	store := errors.Mark(errors.Wrap(errors.Wrap(context.DeadlineExceeded, "append to node/n1"),
		"etcd at unix:///run/etcd.sock unreachable (is etcd running? check --etcd-endpoints)"), events.ErrUnavailable)
	for name, err := range map[string]error{
		"append timed out": errors.Wrap(store, "append to node/n1"),
		"block acquire":    errors.Wrapf(store, "acquire block %d of pool %q", 3, "p"),
		"not running":      errors.Wrap(allocator.ErrNotRunning, "shutting down"),
		"log rewritten":    errors.Wrap(errors.Wrap(events.ErrRewritten, "stream node/n1 was rewritten"), "waiting for the log to be read again"),
	} {
		var ce *cniproto.Error
		if !errors.As(cniError(err, "p"), &ce) || ce.Code != cniproto.CodeTryAgainLater {
			t.Errorf("%s: cniError = %+v, want code 11 (try again)", name, ce)
			continue
		}
		if name != "not running" && name != "log rewritten" && !strings.Contains(ce.Details, "check --etcd-endpoints") {
			t.Errorf("%s: details %q lack the advice", name, ce.Details)
		}
	}
}
