package allocator_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
)

// lostReplyLog commits appends to the streams of one kind but, while armed, reports them
// failed with ErrUnavailable: what a client sees when etcd commits a Txn after the
// client's deadline passed (the reply is lost, the outcome unknown to the writer). With
// downAfter set, the store then stays unreachable: every later append fails.
type lostReplyLog struct {
	events.Log
	kind      string
	armed     atomic.Int64 // how many of the next appends of that kind lose their reply
	downAfter bool
	down      atomic.Bool
}

func (l *lostReplyLog) Append(ctx context.Context, req events.AppendRequest) (events.Version, error) {
	if l.down.Load() {
		return events.Version{}, errors.Mark(errors.Newf("append to %s: store down (test)", req.Stream), events.ErrUnavailable)
	}
	v, err := l.Log.Append(ctx, req)
	k, _ := req.Stream.Kind()
	for _, p := range req.Parts {
		if pk, _ := p.Stream.Kind(); pk == l.kind {
			k = pk // a block take: its block stream is a part of the node stream's append
		}
	}
	if err == nil && k == l.kind && l.armed.Add(-1) >= 0 {
		l.down.Store(l.downAfter)
		return events.Version{}, errors.Mark(errors.Newf("append to %s: reply lost (test)", req.Stream), events.ErrUnavailable)
	}
	return v, err
}

// countAssigned counts the AddressAssigned events of a container in a node stream.
func countAssigned(t *testing.T, log events.Log, node, containerID string) int {
	t.Helper()
	c := 0
	_, err := log.Read(context.Background(), events.NodeStream(node), 1, 0, func(e *events.Event) error {
		if a, ok := e.Payload.(*events.AddressAssigned); ok && a.ContainerID == containerID {
			c++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An append that committed although the allocator was told it failed (unknown outcome):
// the allocator tries again within the request's deadline; that try conflicts, the
// allocator catches up and finds the committed assignment, and the caller gets it, with
// no error and one assignment in the log. A new attachment never gets that address.
func TestAllocateAfterLostReply(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 4, "10.0.0.0/24")
	lost := &lostReplyLog{Log: e.log, kind: "node"}
	n := e.node("n1", lost)
	alloc(t, n, "warm", "p") // the node owns a block: the next append is the address alone

	lost.armed.Store(1)
	c1 := alloc(t, n, "c1", "p")
	if got := countAssigned(t, e.log, "n1", "c1"); got != 1 {
		t.Fatalf("c1 assigned %d times in the log, want 1 (the lost-reply append committed)", got)
	}
	c2 := alloc(t, n, "c2", "p")
	if c1.Addrs[0] == c2.Addrs[0] {
		t.Fatalf("c1 and c2 both got %s", c1.Addrs[0])
	}
	if again := alloc(t, n, "c1", "p"); again.Addrs[0] != c1.Addrs[0] || countAssigned(t, e.log, "n1", "c1") != 1 {
		t.Fatalf("repeated c1 got %s (first %s); %d assignments in the log, want one", again.Addrs[0], c1.Addrs[0], countAssigned(t, e.log, "n1", "c1"))
	}
	var committed *allocator.Assignment
	st := replayAll(t, e.log)
	for key, a := range st.Nodes["n1"].Attached {
		if key.ContainerID == "c1" {
			committed = &allocator.Assignment{Assignment: *a}
		}
	}
	if committed == nil || committed.Addrs[0] != c1.Addrs[0] {
		t.Fatalf("c1 was answered %s, the log holds %+v", c1.Addrs[0], committed)
	}
	checkInvariants(t, e.log, nil)
}

// A lost reply, then the store unreachable until the request's deadline: the caller gets
// a try-again error (ErrUnavailable) by its deadline; once the store is back, the retry
// of the same attachment returns the address that was committed, once.
func TestAllocateLostReplyThenStoreDown(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 4, "10.0.0.0/24")
	lost := &lostReplyLog{Log: e.log, kind: "node", downAfter: true}
	n := e.node("n1", lost)
	alloc(t, n, "warm", "p")
	lost.armed.Store(1)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := n.Allocate(ctx, allocator.Request{ContainerID: "c1", IfName: "eth0", Pool: "p"})
	if !errors.Is(err, events.ErrUnavailable) {
		t.Fatalf("Allocate with a lost reply and the store down = %v, want ErrUnavailable", err)
	}
	if strings.Count(err.Error(), "append to node/n1") != 1 {
		t.Errorf("error %q should name the stream once", err)
	}
	lost.down.Store(false)
	a1 := alloc(t, n, "c1", "p")
	a2 := alloc(t, n, "c1", "p")
	if a1.Addrs[0] != a2.Addrs[0] || countAssigned(t, e.log, "n1", "c1") != 1 {
		t.Fatalf("retries of c1 returned %s then %s; %d assignments in the log, want one", a1.Addrs[0], a2.Addrs[0], countAssigned(t, e.log, "n1", "c1"))
	}
	checkInvariants(t, e.log, nil)
}

// A block acquisition whose reply is lost: the block is the node's in the log; the
// allocator's next try finds it and uses it instead of taking a second block. In a legacy pool the block is taken in its
// own append to the pool stream; in a split pool, with the address, in a node-stream
// append with the block stream as a part.
func TestBlockAcquireAfterLostReply(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind string
		opts []allocator.PoolOption
	}{{"legacy", "pool", []allocator.PoolOption{allocator.LegacyLayout()}}, {"split", "block", []allocator.PoolOption{allocator.BlockStreams()}}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.poolOpts = tc.opts
			e.pool("p", 4, "10.0.0.0/24")
			lost := &lostReplyLog{Log: e.log, kind: tc.kind}
			n := e.node("n1", lost)
			lost.armed.Store(1)
			a := alloc(t, n, "c1", "p")
			st := replayAll(t, e.log)
			owned := ownedBy(st, "p", "n1")
			if len(owned) != 1 || owned[0] != a.Block {
				t.Fatalf("after a lost block reply the node owns blocks %v (c1 in block %d), want just that one", owned, a.Block)
			}
			if countAssigned(t, e.log, "n1", "c1") != 1 {
				t.Fatalf("c1 assigned %d times", countAssigned(t, e.log, "n1", "c1"))
			}
			checkInvariants(t, e.log, nil)
		})
	}
}

// cancelOnBlockRead cancels a context when a block stream is read and answers the read
// with nothing, as a read cut short by the end of its context may.
type cancelOnBlockRead struct {
	events.Log
	cancel context.CancelFunc
}

func (l *cancelOnBlockRead) Read(ctx context.Context, s events.Stream, from uint64, rev int64, fn func(*events.Event) error) (int64, error) {
	if k, _ := s.Kind(); k == "block" {
		l.cancel()
		return rev, nil
	}
	return l.Log.Read(ctx, s, from, rev, fn)
}

// TestLoadCanceledWhileReadingBlocks: a Load whose context ends while it reads the
// node's block streams fails with the context's error; it once went on with the streams
// it had (none), and panicked on a block it owns but had not read (churn at 1,000 nodes).
func TestLoadCanceledWhileReadingBlocks(t *testing.T) {
	e := newEnv(t)
	e.pool("p", 4, "10.0.0.0/24")
	n := e.node("n1", nil)
	for i := range 3 {
		e.pool(fmt.Sprintf("q%d", i), 2, fmt.Sprintf("10.%d.0.0/24", i+1))
		alloc(t, n, fmt.Sprintf("c%d", i), fmt.Sprintf("q%d", i))
	}
	alloc(t, n, "c", "p")
	for range 20 { // the dropped results were a race between the workers and the reader
		ctx, cancel := context.WithCancel(context.Background())
		m := allocator.NewNode(allocator.NodeConfig{Node: "n1", Log: &cancelOnBlockRead{Log: e.log, cancel: cancel}, Clock: e.clock})
		_, _, err := m.Load(ctx)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Load canceled while reading block streams = %v, want context.Canceled", err)
		}
	}
}
