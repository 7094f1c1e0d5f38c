package daemon_test

import (
	"context"
	"testing"
	"time"

	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
)

// TestLogRewrittenUnderCoild (issue 10, item 3): the log is replaced under a running
// coild the way `coilctl log import --force` replaces it. coild notices (the node stream
// vanished or went back, or the watch saw the log deleted) and reads the log again in a
// new session: ADDs work again, and the kernel is made to agree with the new log. Before,
// every ADD failed with "stream node/n1 moved on (head now at 0)", still a minute later.
func TestLogRewrittenUnderCoild(t *testing.T) {
	for _, tc := range []struct {
		name string
		// saveAfterFirstPod: the saved log holds the first pod (the node stream goes back
		// from #3 to #2); otherwise it was saved before coild started (no node stream).
		saveAfterFirstPod bool
	}{
		{name: "node stream gone"},
		{name: "node stream went back", saveAfterFirstPod: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.defaultPool()
			var saved *allocatortest.SavedLog
			if !tc.saveAfterFirstPod {
				saved = allocatortest.SaveLog(t, e.cli, "/coil/")
			}
			e.startDaemon(e.config())
			ctx := context.Background()
			c, list := e.cni(), e.netList()
			add := func(id string) error {
				_, path := e.pod(id)
				_, err := c.AddNetworkList(ctx, list, podRT(id, path))
				return err
			}
			if err := add("before01"); err != nil {
				t.Fatal(err)
			}
			if tc.saveAfterFirstPod {
				saved = allocatortest.SaveLog(t, e.cli, "/coil/")
			}
			if err := add("before02"); err != nil {
				t.Fatal(err)
			}
			oldLease := e.aliveLease()

			saved.RewriteLog(t, e.cli)

			// A runtime retries an ADD that got "try again": one must get through.
			_, path := e.pod("after001")
			seen := map[string]bool{}
			testutil.Eventually(t, 30*time.Second, func() bool {
				_, err := c.AddNetworkList(ctx, list, podRT("after001", path))
				if err != nil && !seen[err.Error()] {
					seen[err.Error()] = true
					t.Logf("ADD after the rewrite: %v", err)
				}
				return err == nil
			}, "ADD after the log was rewritten")
			// A new session: a new lease, registered in the new log.
			if lease, reg := e.aliveLease(), e.lastRegistration(); lease == oldLease || reg != lease {
				t.Fatalf("liveness lease %x (before the rewrite %x), last NodeRegistered lease %x: want a new session registered", lease, oldLease, reg)
			}
			if _, ok := e.held()[attachKey{"after001", "eth0"}]; !ok {
				t.Fatalf("after001 holds nothing in the log: %v", e.held())
			}
			// The kernel follows the new log: pods it does not hold lose their veths.
			e.waitConverged()
		})
	}
}

// lastRegistration returns the lease of the node stream's last NodeRegistered.
func (e *env) lastRegistration() int64 {
	var lease int64
	for _, ev := range e.nodeEvents() {
		if p, ok := ev.Payload.(*events.NodeRegistered); ok {
			lease = p.Lease
		}
	}
	return lease
}
