package daemon_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/containernetworking/cni/pkg/types"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/internal/testutil"
)

// With etcd gone, coild loses its lease and is not ready: an ADD through the plugin then
// gets "try again" (CNI code 11, what a runtime retries), and coild's STATUS says not
// ready (the plugin reports that as 50). coild stays up and, once etcd is back, serves
// ADDs again by itself.
func TestEtcdDownNotReadyIsTryAgain(t *testing.T) {
	e := newServingEnv(t)
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	_, path := e.pod("pod")
	e.etcd.Stop()
	client := cniproto.NewClient(e.sock, 5*time.Second)
	testutil.Eventually(t, 60*time.Second, func() bool { return client.Status(ctx) != nil }, "coild not ready with etcd stopped")
	err := client.Status(ctx)
	var pe *cniproto.Error
	if !errors.As(err, &pe) || pe.Code != cniproto.CodeNotReady || !strings.Contains(pe.Msg, "not ready") {
		t.Errorf("STATUS while not ready: %v, want coild's not-ready error", err)
	}
	_, err = c.AddNetworkList(ctx, list, podRT("d0wn0001", path))
	if code, msg := cniCode(t, err); code != types.ErrTryAgainLater || !strings.Contains(msg, "try again") {
		t.Errorf("ADD while not ready: code %d %q, want 11 (try again)", code, msg)
	}
	e.etcd.Restart()
	e.waitReady()
	if _, err := c.AddNetworkList(ctx, list, podRT("d0wn0001", path)); err != nil {
		t.Fatalf("ADD once etcd is back: %v", err)
	}
}

// TestAddBetweenSessionsWaits: an ADD that arrives after coild's session ended (etcd
// revoked its lease) and before the next one is ready waits for it and succeeds, instead
// of failing the pod start with "not ready" (seen in TestEtcdMemberPausedKeepsSessions
// when etcd revoked the lease under a paused leader).
func TestAddBetweenSessionsWaits(t *testing.T) {
	e := newServingEnvWith(t, func(cfg *daemon.Config) {
		cfg.LeaseTTL = 3 * time.Second // renewals every second: the revocation is noticed at once
	})
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	status := cniproto.NewClient(e.sock, 5*time.Second)
	lease := e.revokeAliveLease()
	testutil.Eventually(t, 30*time.Second, func() bool { return status.Status(ctx) != nil }, "coild between sessions (STATUS not ready)")
	id, path := e.pod("between")
	if _, err := c.AddNetworkList(ctx, list, podRT(id, path)); err != nil {
		t.Fatalf("ADD between two sessions: %v", err)
	}
	e.expectNewLease(lease)
	if held := e.held(); len(held[attachKey{id, "eth0"}]) == 0 {
		t.Errorf("log holds %v, want the pod's address", held)
	}
}

// etcd itself can revoke coild's lease under it (in the chaos soak: an etcd leader paused
// past the lease's expiry, as it resumed). An ADD whose append is then fenced is not
// failed: coild renews at once, learns the lease is gone, starts a new session and
// allocates the ADD there, within the request's deadline. Before, the ADD failed with
// "fenced" (code 11) and the session ended only at the next renewal, up to TTL/3 later.
func TestAddFencedByRevokedLeaseSucceeds(t *testing.T) {
	e := newServingEnvWith(t, func(cfg *daemon.Config) {
		cfg.LeaseTTL = 15 * time.Second // renewals every 5 s: the ADD below meets the revoked lease first
	})
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	id0, path0 := e.pod("before")
	if _, err := c.AddNetworkList(ctx, list, podRT(id0, path0)); err != nil {
		t.Fatal(err)
	}
	lease := e.revokeAliveLease()
	id, path := e.pod("fenced")
	start := time.Now()
	if _, err := c.AddNetworkList(ctx, list, podRT(id, path)); err != nil {
		t.Fatalf("ADD right after etcd revoked coild's lease: %v", err)
	}
	t.Logf("ADD after the revocation took %s", time.Since(start).Round(time.Millisecond))
	e.expectNewLease(lease)
	held := e.held()
	if len(held[attachKey{id, "eth0"}]) == 0 || len(held[attachKey{id0, "eth0"}]) == 0 || len(held) != 2 {
		t.Errorf("log holds %v, want the two pods' addresses", held)
	}
}

// revokeAliveLease revokes the lease holding the node's liveness key, as etcd does when
// the lease expires under a paused leader, and returns it.
func (e *env) revokeAliveLease() int64 {
	e.t.Helper()
	lease := e.aliveLease()
	if lease == 0 {
		e.t.Fatal("no liveness key")
	}
	if _, err := e.cli.Revoke(context.Background(), clientv3.LeaseID(lease)); err != nil {
		e.t.Fatal(err)
	}
	return lease
}

// expectNewLease fails the test unless the node's liveness key is held by a lease other
// than old (a new session's).
func (e *env) expectNewLease(old int64) {
	e.t.Helper()
	if got := e.aliveLease(); got == 0 || got == old {
		e.t.Errorf("liveness key's lease %x after the ADD, want a new one (old %x)", got, old)
	}
}
