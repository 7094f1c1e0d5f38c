package allocator_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
)

// faultyNode is a node allocator on a real etcd whose client fails the transactions
// the test arms, as etcd's server fails them.
type faultyNode struct {
	*allocatortest.Node
	log   *events.EtcdLog
	fault atomic.Pointer[func() *etcdtest.TxnFault]
}

func startFaultyNode(t *testing.T, c *etcdtest.Cluster, opt allocatortest.Options) *faultyNode {
	t.Helper()
	cli := c.Client(t)
	log := coilLog(t, cli)
	admin := &allocator.Admin{Log: log, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.CreatePool(context.Background(), pool(t, "p", 4, "10.0.0.0/24")); err != nil {
		t.Fatal(err)
	}
	f := &faultyNode{log: log}
	etcdtest.InjectTxnFaults(cli, func(int) *etcdtest.TxnFault {
		if p := f.fault.Load(); p != nil {
			return (*p)()
		}
		return nil
	})
	opt.Prefix = "/coil/"
	f.Node = allocatortest.Start(t, cli, log, "n1", opt)
	return f
}

// failNext makes the next k transactions fail with err (after committing, with commit).
func (f *faultyNode) failNext(k int, commit bool, err error) {
	left := int64(k)
	var mu sync.Mutex
	fn := func() *etcdtest.TxnFault {
		mu.Lock()
		defer mu.Unlock()
		if left == 0 {
			return nil
		}
		left--
		return &etcdtest.TxnFault{Commit: commit, Err: err}
	}
	f.fault.Store(&fn)
}

// A member that loses its leader while it holds the node's append answers "request
// timed out, possibly due to previous leader failure", the append having committed or
// not. The allocator tries again within the request's deadline: the caller gets its
// address without an error, the attachment is assigned once and the node takes one
// block. (This error once reached the CNI runtime as a plain failure of an ADD.)
func TestAllocateRetriesEtcdServerTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		warm   bool // the node owns a block first: the failing append is the address's
		commit bool
		err    error
	}{
		{"address append lost with the leader", true, false, rpctypes.ErrTimeoutDueToLeaderFail},
		{"address append committed, reply lost", true, true, rpctypes.ErrTimeoutDueToLeaderFail},
		{"block append lost with the leader", false, false, rpctypes.ErrTimeoutDueToLeaderFail},
		{"block append committed, reply lost", false, true, rpctypes.ErrTimeoutDueToLeaderFail},
		{"leader changed", true, false, rpctypes.ErrLeaderChanged},
		{"server stopping", true, false, rpctypes.ErrStopped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFaultyNode(t, etcdtest.Start(t), allocatortest.Options{})
			ctx := context.Background()
			if tc.warm {
				if _, err := f.Allocate(ctx, allocator.Request{ContainerID: "warm", IfName: "eth0", Pool: "p"}); err != nil {
					t.Fatal(err)
				}
			}
			f.failNext(2, tc.commit, tc.err)
			a, err := f.Allocate(ctx, allocator.Request{ContainerID: "c1", IfName: "eth0", Pool: "p"})
			if err != nil {
				t.Fatalf("Allocate through %q: %v, want it retried within the deadline", tc.err, err)
			}
			if got := countAssigned(t, f.log, "n1", "c1"); got != 1 {
				t.Fatalf("c1 assigned %d times in the log, want 1", got)
			}
			st := replayAll(t, f.log)
			if owned := st.Pools["p"].OwnedBy("n1"); len(owned) != 1 || owned[0] != a.Block {
				t.Fatalf("n1 owns blocks %v (c1 in block %d), want just that one", owned, a.Block)
			}
			checkInvariants(t, f.log, nil)
		})
	}
}

// etcd answering "not now" past the request's deadline: the caller gets a try-again
// error (ErrUnavailable) that names the stream once (it once read "append to node/n1:
// append to node/n1: ...") and says how long the allocator tried.
func TestAllocateGivesUpAtDeadline(t *testing.T) {
	f := startFaultyNode(t, etcdtest.Start(t), allocatortest.Options{AppendTimeout: time.Second})
	ctx := context.Background()
	if _, err := f.Allocate(ctx, allocator.Request{ContainerID: "warm", IfName: "eth0", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	f.failNext(1<<30, false, rpctypes.ErrTimeoutDueToLeaderFail)
	_, err := f.Allocate(ctx, allocator.Request{ContainerID: "c1", IfName: "eth0", Pool: "p"})
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("Allocate = %v, want ErrUnavailable", err)
	}
	msg := err.Error()
	if strings.Count(msg, "append to node/n1") != 1 || !strings.Contains(msg, "gave up after") ||
		!strings.Contains(msg, "previous leader failure") || !strings.Contains(msg, "--etcd-endpoints") {
		t.Errorf("error %q: want the stream once, the tries, etcd's reason and the flag", msg)
	}
	f.fault.Store(nil)
	if _, err := f.Allocate(ctx, allocator.Request{ContainerID: "c1", IfName: "eth0", Pool: "p"}); err != nil {
		t.Fatalf("Allocate once etcd answers: %v", err)
	}
}

// A burst of requests while etcd is down: each fails with a try-again error within its
// own deadline (AppendTimeout after it was made), also the ones queued behind the first
// append; none waits for the appends of the requests before it. Once etcd is back the
// retries get one address each, all different.
func TestAllocateBurstWithEtcdDown(t *testing.T) {
	c := etcdtest.Start(t)
	const appendTimeout = 2 * time.Second
	f := startFaultyNode(t, c, allocatortest.Options{AppendTimeout: appendTimeout})
	if _, err := f.Allocate(context.Background(), allocator.Request{ContainerID: "warm", IfName: "eth0", Pool: "p"}); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	const burst = 8
	errs := make([]error, burst)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The caller's own deadline is just under two appends' worth: a request
			// queued behind another's append until that one gives up, then tried for a
			// whole AppendTimeout of its own, would run into it.
			ctx, cancel := context.WithTimeout(context.Background(), 2*appendTimeout-200*time.Millisecond)
			defer cancel()
			_, errs[i] = f.Allocate(ctx, allocator.Request{ContainerID: fmt.Sprint("c", i), IfName: "eth0", Pool: "p"})
			if ctx.Err() != nil {
				errs[i] = errors.Wrap(errs[i], "the caller's deadline passed first")
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, events.ErrUnavailable) || strings.Contains(err.Error(), "the caller's deadline passed first") {
			t.Errorf("c%d with etcd down: %v, want ErrUnavailable before the caller's deadline", i, err)
		}
	}
	c.Restart()
	seen := map[netip.Addr]string{}
	for i := range burst {
		id := fmt.Sprint("c", i)
		a, _, err := allocateRetrying(t, f.Node, id)
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := seen[a]; dup {
			t.Fatalf("%s and %s both got %s", prev, id, a)
		}
		seen[a] = id
		if got := countAssigned(t, f.log, "n1", id); got != 1 {
			t.Errorf("%s assigned %d times, want 1", id, got)
		}
	}
	checkInvariants(t, f.log, nil)
}
