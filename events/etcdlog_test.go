package events_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
	"github.com/coil-net/coil/internal/etcdtest"
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
	for i := 0; i < n; i++ {
		h, err := l.Append(context.Background(), events.AppendRequest{Stream: s, Expected: head,
			Events: []*events.Event{eventstest.SampleEvent(i, &events.BlockAssigned{Index: uint32(i), Node: "n"})}})
		if err != nil {
			t.Fatal(err)
		}
		head = h
	}
	return head
}

func TestEtcdLogArchivedRead(t *testing.T) {
	c := etcdtest.Start(t)
	cli := c.Client(t)
	l := events.NewEtcdLog(cli, events.EtcdConfig{ReadChunk: 2})
	defer l.Close()
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
	c := etcdtest.Start(t)
	cli := c.Client(t)
	l := events.NewEtcdLog(cli, events.EtcdConfig{})
	defer l.Close()
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
	c := etcdtest.Start(t)
	cli := c.Client(t)
	l := events.NewEtcdLog(cli, events.EtcdConfig{})
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := events.PoolStream("r")
	_, rev, err := l.Head(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	ch := l.Watch(ctx, events.WatchRequest{Prefixes: []string{"pool/"}, FromRev: rev})
	head := appendBlocks(t, l, s, events.Version{}, 3)
	next := uint64(1)
	recv := func(upto uint64) {
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
	recv(3)
	c.Restart()
	for i := 0; i < 3; i++ {
		h, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head,
			Events: []*events.Event{eventstest.SampleEvent(i, &events.BlockAssigned{Index: uint32(10 + i), Node: "n"})}})
		if err != nil {
			t.Fatalf("append after restart: %+v", err)
		}
		head = h
	}
	recv(6)
}
