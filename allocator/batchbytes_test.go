package allocator_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
)

// queuedNode starts etcd with pool "p" (10.0.0.0/16, blocks of 32), loads and registers
// node allocator "n1" fenced on a real etcd lease, but does not run its committer:
// requests queue up until run is called, so a test decides what one group commit holds.
func queuedNode(t *testing.T) (n *allocator.Node, run func()) {
	t.Helper()
	ctx := context.Background()
	cli, log, admin := startEtcdAdmin(t)
	if err := admin.CreatePool(ctx, pool(t, "p", 5, "10.0.0.0/16")); err != nil {
		t.Fatal(err)
	}
	const name = "n1"
	g, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	key := events.AliveKey("/coil/", name)
	if _, err = cli.Put(ctx, key, name, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	n = allocator.NewNode(allocator.NodeConfig{Node: name, Log: log, Clock: events.SystemClock{}, AliveKey: key, Lease: int64(g.ID)})
	if _, _, err = n.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err = n.Register(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	return n, func() { go func() { n.Run(rctx); close(done) }() }
}

// submitAll sends every request at once and waits until the committer holds all of them
// in its queue.
func submitAll(t *testing.T, n *allocator.Node, reqs []allocator.Request) ([]error, *sync.WaitGroup) {
	t.Helper()
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, errs[i] = n.Allocate(ctx, r)
		}()
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return n.Queued() == len(reqs) }, "all requests queued")
	return errs, &wg
}

// TestBatchesSizedByBytes: requests whose events together exceed what one append may
// carry (events.MaxBatchBytes) are committed in several appends, and every one succeeds
// (issue 10: five huge ADDs failed 18 of 20 normal ones with "batch too large").
func TestBatchesSizedByBytes(t *testing.T) {
	n, run := queuedNode(t)
	var reqs []allocator.Request
	for i := range 26 {
		r := allocator.Request{ContainerID: fmt.Sprintf("c%02d", i), IfName: "eth0", Pool: "p", PodNamespace: "ns", PodName: fmt.Sprintf("pod-%d", i)}
		if i%5 == 0 { // six requests of 250 KB each: 1.5 MB in all
			r.PodName = strings.Repeat("x", 250<<10)
		}
		reqs = append(reqs, r)
	}
	errs, wg := submitAll(t, n, reqs)
	run()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d (%d-byte pod name): %v", i, len(reqs[i].PodName), err)
		}
	}
	if got := len(n.Attachments()); got != len(reqs) {
		t.Errorf("%d attachments, want %d", got, len(reqs))
	}
}

// TestUnstorableEventFailsAlone: a request whose event cannot be stored at all (larger
// than an append may be, or not encodable) fails on its own; the requests committed in
// the same group are not affected.
func TestUnstorableEventFailsAlone(t *testing.T) {
	n, run := queuedNode(t)
	var reqs []allocator.Request
	for i := range 8 {
		reqs = append(reqs, allocator.Request{ContainerID: fmt.Sprintf("c%02d", i), IfName: "eth0", Pool: "p", PodName: "pod"})
	}
	reqs[2].PodName = strings.Repeat("x", events.MaxBatchBytes+1)
	reqs[5].PodName = "bad-\xff-utf8"
	errs, wg := submitAll(t, n, reqs)
	run()
	wg.Wait()
	for i, err := range errs {
		switch i {
		case 2:
			if !errors.Is(err, events.ErrTooLarge) || !strings.Contains(err.Error(), "this request's event takes") {
				t.Errorf("oversized request: %v, want ErrTooLarge saying so", err)
			}
		case 5:
			if err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
				t.Errorf("unencodable request: %v, want a UTF-8 error", err)
			}
		default:
			if err != nil {
				t.Errorf("request %d batched with unstorable ones: %v", i, err)
			}
		}
	}
	if got := len(n.Attachments()); got != 6 {
		t.Errorf("%d attachments, want 6", got)
	}
}
