package events_test

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
)

// holdAlive puts node's liveness key under /p/, holding value, on a new lease (as a
// coild does) and returns the lease.
func holdAlive(ctx context.Context, t *testing.T, cli *clientv3.Client, node, value string) clientv3.LeaseID {
	t.Helper()
	g, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = cli.Put(ctx, events.AliveKey("/p/", node), value, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	return g.ID
}

// LiveNodes lists the liveness keys held on leases (with their TTL), and
// a BulkGuard (through Clear, which deletes only the index here) fails once a coild starts, or restarts on a new lease,
// after the read, but not because a key expired.
func TestLiveNodes(t *testing.T) {
	_, cli, lg := startEtcdLog(t, events.EtcdConfig{Prefix: "/p/"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	live, rev, err := lg.LiveNodes(ctx, true)
	if err != nil || len(live) != 0 || rev == 0 {
		t.Fatalf("empty: %v %d %v", live, rev, err)
	}
	hold := func(node string) clientv3.LeaseID { return holdAlive(ctx, t, cli, node, node) }
	l2 := hold("n2")
	l1 := hold("n1")
	// Another prefix's keys are not this log's.
	if _, err = cli.Put(ctx, events.AliveKey("/other/", "n9"), "x"); err != nil {
		t.Fatal(err)
	}
	live, rev, err = lg.LiveNodes(ctx, true)
	if err != nil || len(live) != 2 {
		t.Fatalf("live = %+v, %v", live, err)
	}
	if live[0].Node != "n1" || live[0].Lease != int64(l1) || live[0].Key != "/p/alive/n1" || live[1].Node != "n2" ||
		live[1].Lease != int64(l2) || live[0].TTL <= 0 || live[0].TTL > 600 || live[1].Created >= live[0].Created {
		t.Fatalf("live = %+v", live)
	}

	txn := func() bool {
		t.Helper()
		terr := lg.Clear(ctx, false, events.BulkGuard{NoNodeStartedAfter: rev})
		if terr != nil && !errors.Is(terr, events.ErrNodeStarted) {
			t.Fatal(terr)
		}
		return terr == nil
	}
	if !txn() {
		t.Fatal("nothing changed since the read, yet the condition fails")
	}
	if _, err = cli.Revoke(ctx, l2); err != nil { // n2's lease expires
		t.Fatal(err)
	}
	if !txn() {
		t.Fatal("a key that expired since the read fails the condition")
	}
	hold("n3") // a coild starts
	if txn() {
		t.Fatal("a node that started after the read passes the condition")
	}
	// Read again: n3 is there and the condition holds from then on; n1 restarting on a
	// new lease fails it.
	live, rev, err = lg.LiveNodes(ctx, false)
	if err != nil || len(live) != 2 || live[0].Node != "n1" || live[1].Node != "n3" || live[0].TTL != 0 {
		t.Fatalf("live = %+v, %v", live, err)
	}
	if !txn() {
		t.Fatal("condition fails after a fresh read")
	}
	if _, err = cli.Revoke(ctx, l1); err != nil {
		t.Fatal(err)
	}
	hold("n1")
	if txn() {
		t.Fatal("a node that restarted on a new lease after the read passes the condition")
	}
}
