package events_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/internal/testutil"
)

// etcdHarness reaches into etcd for the conformance suite.
type etcdHarness struct {
	t    *testing.T
	cli  *clientv3.Client
	keys events.Keys
}

func (h *etcdHarness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

func (h *etcdHarness) NewLease() int64 {
	r, err := h.cli.Grant(h.ctx(), 600)
	if err != nil {
		h.t.Fatal(err)
	}
	return int64(r.ID)
}

func (h *etcdHarness) SetLeaseKey(key string, lease int64) {
	if _, err := h.cli.Put(h.ctx(), key, "alive", clientv3.WithLease(clientv3.LeaseID(lease))); err != nil {
		h.t.Fatal(err)
	}
}

func (h *etcdHarness) DeleteKey(key string) {
	if _, err := h.cli.Delete(h.ctx(), key); err != nil {
		h.t.Fatal(err)
	}
}

func (h *etcdHarness) Compact(rev int64) {
	if _, err := h.cli.Compact(h.ctx(), rev, clientv3.WithCompactPhysical()); err != nil {
		h.t.Fatal(err)
	}
}

func (h *etcdHarness) Corrupt(s events.Stream, seq uint64, value []byte) {
	if _, err := h.cli.Put(h.ctx(), h.keys.Event(s, seq), string(value)); err != nil {
		h.t.Fatal(err)
	}
}

// newEtcdLogs returns a factory of logs sharing one etcd, each under its own prefix.
func newEtcdLogs(t *testing.T, c *etcdtest.Cluster, cfg events.EtcdConfig) eventstest.NewLog {
	t.Helper()
	cli := c.Client(t)
	n := 0
	return func(t *testing.T) (events.Log, eventstest.Harness) {
		t.Helper()
		n++
		cfg := cfg
		cfg.Prefix = fmt.Sprintf("/t%d/", n)
		l := events.NewEtcdLog(cli, cfg)
		t.Cleanup(func() { _ = l.Close() })
		return l, &etcdHarness{t: t, cli: cli, keys: l.Keys()}
	}
}

// startEtcdLog starts etcd and opens a log with cfg on a client of it, closed when the
// test ends; it returns the cluster and the client too.
func startEtcdLog(t *testing.T, cfg events.EtcdConfig) (*etcdtest.Cluster, *clientv3.Client, *events.EtcdLog) {
	t.Helper()
	c := etcdtest.Start(t)
	cli := c.Client(t)
	l := events.NewEtcdLog(cli, cfg)
	t.Cleanup(func() { _ = l.Close() })
	return c, cli, l
}

func TestEtcdLogConformance(t *testing.T) {
	c := etcdtest.Start(t)
	eventstest.Run(t, newEtcdLogs(t, c, events.EtcdConfig{}))
}

// Small read chunks exercise the chunked, pipelined read path.
func TestEtcdLogConformanceSmallChunks(t *testing.T) {
	c := etcdtest.Start(t)
	eventstest.Run(t, newEtcdLogs(t, c, events.EtcdConfig{ReadChunk: 3}))
}

func appendBlocks(t *testing.T, l events.Log, s events.Stream, head events.Version, n int) events.Version {
	t.Helper()
	return appendBlocksFrom(t, l, s, head, 0, n)
}

// appendBlocksFrom appends n BlockAssigned events, of blocks from, from+1, ...
func appendBlocksFrom(t *testing.T, l events.Log, s events.Stream, head events.Version, from, n int) events.Version {
	t.Helper()
	for i := from; i < from+n; i++ {
		h, err := l.Append(context.Background(), events.AppendRequest{Stream: s, Expected: head,
			Events: []*events.Event{eventstest.SampleEvent(i, &events.BlockAssigned{Index: uint64(i), Node: "n"})}})
		if err != nil {
			t.Fatal(err)
		}
		head = h
	}
	return head
}

func TestEtcdLogArchivedRead(t *testing.T) {
	_, cli, l := startEtcdLog(t, events.EtcdConfig{ReadChunk: 2})
	s := events.PoolStream("arch")
	appendBlocks(t, l, s, events.Version{}, 10)
	ctx := context.Background()
	// Archive #1..#6: remove their keys.
	if _, err := cli.Delete(ctx, l.Keys().Event(s, 1), clientv3.WithRange(l.Keys().Event(s, 7))); err != nil {
		t.Fatal(err)
	}
	for _, from := range []uint64{1, 5} {
		_, err := l.Read(ctx, s, from, 0, func(*events.Event) error { return nil })
		if !errors.Is(err, events.ErrCompacted) || !strings.Contains(err.Error(), string(s)) {
			t.Fatalf("read from #%d of an archived range: %v, want ErrCompacted naming the stream", from, err)
		}
	}
	var got []uint64
	if _, err := l.Read(ctx, s, 7, 0, func(e *events.Event) error { got = append(got, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[7 8 9 10]" {
		t.Fatalf("read from #7: %v", got)
	}
}

func TestEtcdLogUnavailable(t *testing.T) {
	c, _, l := startEtcdLog(t, events.EtcdConfig{})
	s := events.PoolStream("u")
	head := appendBlocks(t, l, s, events.Version{}, 2)
	c.Stop()

	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, events.ErrUnavailable) {
			t.Fatalf("%s with etcd stopped: %v, want ErrUnavailable", what, err)
		}
		if !strings.Contains(err.Error(), c.Endpoints()[0]) || !strings.Contains(err.Error(), "--etcd-endpoints") {
			t.Fatalf("%s: error %q names neither the endpoint nor the flag", what, err)
		}
	}
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	_, err := l.Append(short(), events.AppendRequest{Stream: s, Expected: head,
		Events: []*events.Event{eventstest.SampleEvent(0, &events.BlockAssigned{Node: "n"})}})
	check("Append", err)
	_, _, err = l.Head(short(), s)
	check("Head", err)
	_, err = l.Read(short(), s, 1, 0, func(*events.Event) error { return nil })
	check("Read", err)
	_, _, err = l.Streams(short(), "", 0)
	check("Streams", err)

	c.Restart()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head,
		Events: []*events.Event{eventstest.SampleEvent(0, &events.BlockAssigned{Node: "n"})}}); err != nil {
		t.Fatalf("append after restart: %+v", err)
	}
}

func TestEtcdLogCloseEndsWatches(t *testing.T) {
	c := etcdtest.Start(t)
	l := events.NewEtcdLog(c.Client(t), events.EtcdConfig{})
	ch := l.Watch(context.Background(), events.WatchRequest{Prefixes: []string{"cluster", "pool/"}})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for b := range ch {
		if b.Err != nil {
			t.Fatalf("watch ended by Close delivered an error: %v", b.Err)
		}
	}
}

// A watch outlives an etcd restart: clientv3 resumes it from the last revision it saw.
func TestEtcdLogWatchSurvivesRestart(t *testing.T) {
	c, _, l := startEtcdLog(t, events.EtcdConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := events.PoolStream("r")
	_, rev, err := l.Head(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	ch := l.Watch(ctx, events.WatchRequest{Prefixes: []string{"pool/"}, FromRev: rev})
	head := appendBlocks(t, l, s, events.Version{}, 3)
	recv := receiver(ctx, t, ch, 1)
	recv(3)
	c.Restart()
	for i := 0; i < 3; i++ {
		h, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head,
			Events: []*events.Event{eventstest.SampleEvent(i, &events.BlockAssigned{Index: uint64(10 + i), Node: "n"})}})
		if err != nil {
			t.Fatalf("append after restart: %+v", err)
		}
		head = h
	}
	recv(6)
}

// receiver returns recv(upto): it takes batches from ch until it has had every event up
// to #upto, checking they come in sequence from #next and without an error.
func receiver(ctx context.Context, t *testing.T, ch <-chan events.WatchBatch, next uint64) func(upto uint64) {
	t.Helper()
	return func(upto uint64) {
		t.Helper()
		for next <= upto {
			select {
			case b := <-ch:
				if b.Err != nil {
					t.Fatalf("watch: %+v", b.Err)
				}
				for _, e := range b.Events {
					if e.Seq != next {
						t.Fatalf("got #%d, want #%d", e.Seq, next)
					}
					next++
				}
			case <-ctx.Done():
				t.Fatalf("watch stalled before #%d", next)
			}
		}
	}
}

// brokenWatcher ends every watch at once (its channel closes, as clientv3's does when
// etcd cancels a watch) while broken is set.
type brokenWatcher struct {
	clientv3.Watcher
	broken atomic.Bool
	calls  atomic.Int64
}

func (w *brokenWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	w.calls.Add(1)
	if w.broken.Load() {
		ch := make(chan clientv3.WatchResponse)
		close(ch)
		return ch
	}
	return w.Watcher.Watch(ctx, key, opts...)
}

// TestEtcdLogWatchResumes: a watch that etcd ends saying "not now" (a member that lost
// its leader cancels its watches) resumes from the last event it delivered: the events
// appended meanwhile come in order, none twice, with no error. One that cannot resume
// within WatchResumeFor ends with ErrUnavailable.
func TestEtcdLogWatchResumes(t *testing.T) {
	c := etcdtest.Start(t)
	cli := c.Client(t)
	bw := &brokenWatcher{Watcher: cli.Watcher}
	cli.Watcher = bw
	l := events.NewEtcdLog(cli, events.EtcdConfig{WatchResumeFor: time.Minute})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := events.PoolStream("r")
	head := appendBlocks(t, l, s, events.Version{}, 2)
	_, rev, err := l.Head(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	bw.broken.Store(true)
	ch := l.Watch(ctx, events.WatchRequest{Prefixes: []string{"pool/"}, FromRev: rev, After: map[events.Stream]uint64{s: 2}})
	testutil.Eventually(t, 30*time.Second, func() bool { return bw.calls.Load() >= 3 }, "the watch ended, resumed and ended again")
	head = appendBlocksFrom(t, l, s, head, 2, 3) // #3-#5 while etcd keeps ending the watch
	recv := receiver(ctx, t, ch, 3)
	recv(5) // delivered by a resume's catch-up read
	bw.broken.Store(false)
	appendBlocksFrom(t, l, s, head, 5, 2)
	recv(7)

	short := events.NewEtcdLog(cli, events.EtcdConfig{WatchResumeFor: 300 * time.Millisecond})
	defer short.Close()
	bw.broken.Store(true)
	for b := range short.Watch(ctx, events.WatchRequest{Prefixes: []string{"pool/"}, FromRev: rev}) {
		if b.Err != nil {
			if !errors.Is(b.Err, events.ErrUnavailable) {
				t.Fatalf("watch that cannot resume ended with %v, want ErrUnavailable", b.Err)
			}
			return
		}
	}
	t.Fatal("watch that cannot resume ended without an error")
}

// TestEtcdLogWatchRewritten: a watch notices a stream rewritten under it (the log
// deleted and written again, as `coilctl log import --force` does, or an event key
// written a second time) and ends with ErrRewritten; archiving old events is not a
// rewrite.
func TestEtcdLogWatchRewritten(t *testing.T) {
	s := events.PoolStream("a")
	type step func(t *testing.T, cli *clientv3.Client, keys events.Keys, saved map[string]string)
	for _, tc := range []struct {
		name    string
		rewrite step
		want    string // "" = no error, the watch goes on
	}{
		{"log replaced by an older copy", func(t *testing.T, cli *clientv3.Client, keys events.Keys, saved map[string]string) {
			t.Helper()
			ctx := context.Background()
			if _, err := cli.Txn(ctx).Then(clientv3.OpDelete(keys.LogPrefix(), clientv3.WithPrefix()),
				clientv3.OpDelete(keys.HeadPrefix(), clientv3.WithPrefix())).Commit(); err != nil {
				t.Fatal(err)
			}
			for k, v := range saved {
				if _, err := cli.Put(ctx, k, v); err != nil {
					t.Fatal(err)
				}
			}
		}, "pool/a: its events and head were deleted"},
		{"event written again", func(t *testing.T, cli *clientv3.Client, keys events.Keys, _ map[string]string) {
			t.Helper()
			ctx := context.Background()
			r, err := cli.Get(ctx, keys.Event(s, 2))
			if err != nil || len(r.Kvs) != 1 {
				t.Fatalf("get #2: %v", err)
			}
			if _, err := cli.Put(ctx, keys.Event(s, 2), string(r.Kvs[0].Value)); err != nil {
				t.Fatal(err)
			}
		}, "pool/a #2 was written again"},
		{"archived events deleted", func(t *testing.T, cli *clientv3.Client, keys events.Keys, _ map[string]string) {
			t.Helper()
			if _, err := cli.Delete(context.Background(), keys.Event(s, 1), clientv3.WithRange(keys.Event(s, 3))); err != nil {
				t.Fatal(err)
			}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cli, l := startEtcdLog(t, events.EtcdConfig{})
			keys := events.NewKeys("")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			head := appendBlocks(t, l, s, events.Version{}, 1)
			saved := map[string]string{}
			for _, k := range []string{keys.Event(s, 1), keys.Head(s)} {
				r, err := cli.Get(ctx, k)
				if err != nil || len(r.Kvs) != 1 {
					t.Fatalf("get %s: %v", k, err)
				}
				saved[k] = string(r.Kvs[0].Value)
			}
			_, rev, err := l.Head(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			ch := l.Watch(ctx, events.WatchRequest{Prefixes: []string{"pool/"}, FromRev: rev, After: map[events.Stream]uint64{s: 1}})
			for i := 0; i < 2; i++ {
				h, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head,
					Events: []*events.Event{eventstest.SampleEvent(i, &events.BlockAssigned{Index: uint64(10 + i), Node: "n"})}})
				if err != nil {
					t.Fatal(err)
				}
				head = h
			}
			got := 0
			for got < 2 {
				b := <-ch
				if b.Err != nil {
					t.Fatalf("watch: %v", b.Err)
				}
				got += len(b.Events)
			}
			tc.rewrite(t, cli, keys, saved)
			if tc.want == "" {
				if _, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head,
					Events: []*events.Event{eventstest.SampleEvent(9, &events.BlockAssigned{Index: 20, Node: "n"})}}); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case b := <-ch:
				switch {
				case tc.want == "" && b.Err != nil:
					t.Fatalf("watch ended with %v", b.Err)
				case tc.want == "" && (len(b.Events) != 1 || b.Events[0].Seq != 4):
					t.Fatalf("watch delivered %d events, want #4", len(b.Events))
				case tc.want != "" && (!errors.Is(b.Err, events.ErrRewritten) || !strings.Contains(b.Err.Error(), tc.want)):
					t.Fatalf("watch delivered %v (%d events), want ErrRewritten: %s", b.Err, len(b.Events), tc.want)
				}
			case <-ctx.Done():
				t.Fatal("watch delivered nothing")
			}
		})
	}
}

// Every "not now" answer of etcd's server is a try-again error (ErrUnavailable), named
// once in the message. The etcd client hands these to the caller as rpctypes.EtcdError
// values, not gRPC statuses: "request timed out, possibly due to previous leader
// failure" (a member's proposal lost with its leader) was once returned as a plain
// error, and a CNI ADD failed with it instead of being retried.
func TestEtcdLogServerErrorsAreTryAgain(t *testing.T) {
	_, cli, l := startEtcdLog(t, events.EtcdConfig{})
	s := events.PoolStream("u")
	head := appendBlocks(t, l, s, events.Version{}, 1)
	var inject error
	etcdtest.InjectTxnFaults(cli, func(int) *etcdtest.TxnFault { return &etcdtest.TxnFault{Err: inject} })
	for _, e := range []error{
		rpctypes.ErrNoLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrStopped, rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrTimeoutWaitAppliedIndex,
		rpctypes.ErrUnhealthy, rpctypes.ErrTooManyRequests,
	} {
		inject = e
		_, err := l.Append(context.Background(), events.AppendRequest{Stream: s, Expected: head,
			Events: []*events.Event{eventstest.SampleEvent(0, &events.BlockAssigned{Node: "n"})}})
		if !errors.Is(err, events.ErrUnavailable) {
			t.Errorf("Append failing with %q: %v, want ErrUnavailable (try again)", e, err)
			continue
		}
		msg := err.Error()
		if strings.Count(msg, e.Error()) != 1 || strings.Count(msg, "append to pool/u") != 1 || !strings.Contains(msg, "--etcd-endpoints") {
			t.Errorf("Append failing with %q: message %q should name the etcd error and the stream once, and the flag", e, msg)
		}
	}
	// Errors that will not go away by themselves are not try-again errors.
	for _, e := range []error{rpctypes.ErrNoSpace, rpctypes.ErrRequestTooLarge, rpctypes.ErrPermissionDenied} {
		inject = e
		_, err := l.Append(context.Background(), events.AppendRequest{Stream: s, Expected: head,
			Events: []*events.Event{eventstest.SampleEvent(0, &events.BlockAssigned{Node: "n"})}})
		if err == nil || errors.Is(err, events.ErrUnavailable) {
			t.Errorf("Append failing with %q: %v, want a plain error", e, err)
		}
	}
}
