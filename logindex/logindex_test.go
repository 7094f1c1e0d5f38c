package logindex_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/logindex"
)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// churn appends n events to stream: AddressAssigned of pod churn/pod-C (container C)
// then its AddressReleased, C counting up from 0.
func churn(t *testing.T, lg events.Log, s events.Stream, n int) {
	t.Helper()
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var head events.Version
	for lo := 0; lo < n; lo += events.MaxBatch - 1 {
		var evs []*events.Event
		for i := lo; i < min(n, lo+events.MaxBatch-1); i++ {
			c := i / 2
			id := fmt.Sprintf("%064x", c+1)
			addr := netip.AddrFrom4([4]byte{10, 0, 0, byte(c % 250)})
			var p events.Payload = &events.AddressAssigned{ContainerID: id, IfName: "eth0", PodNamespace: "churn",
				PodName: fmt.Sprintf("pod-%d", c), Pool: "default", Addrs: []netip.Addr{addr}}
			if i%2 == 1 {
				p = &events.AddressReleased{ContainerID: id, IfName: "eth0", Pool: "default", Addrs: []netip.Addr{addr}}
			}
			evs = append(evs, &events.Event{Time: start.Add(time.Duration(i) * time.Second), Actor: "n1", Payload: p})
		}
		var err error
		if head, err = lg.Append(ctxT(t), events.AppendRequest{Stream: s, Expected: head, Events: evs}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEntryEncoding(t *testing.T) {
	s := events.NodeStream("n1")
	h := events.Hash{1, 2, 3}
	e := logindex.NewEntry(s, 1025, 2048, h, []string{logindex.PodKey("ns", "web-0"), logindex.ContainerKey("0123456789abcdef")})
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := logindex.Decode(s, b)
	if err != nil {
		t.Fatal(err)
	}
	if got.First != 1025 || got.Last != 2048 || got.Hash != h {
		t.Fatalf("decoded %+v", got)
	}
	if !got.MayContain("p:ns/web-0") || !got.MayContain("c:0123456789ab") {
		t.Fatal("a key added is missing")
	}
	if got.MayContain(logindex.PodKey("ns", "web-1")) && got.MayContain(logindex.PodKey("ns", "web-2")) && got.MayContain(logindex.PodKey("ns", "web-3")) {
		t.Fatal("three absent keys all match: not a ~1% filter")
	}
	for name, bad := range map[string][]byte{
		"empty":      nil,
		"format 2":   append([]byte{2}, b[1:]...),
		"truncated":  b[:len(b)-1],
		"oversized":  append(bytes.Clone(b), 0),
		"no hash":    b[:5],
		"last<first": append([]byte{1, 5, 4}, b[5:]...),
	} {
		if _, err := logindex.Decode(s, bad); !errors.Is(err, logindex.ErrBadEntry) {
			t.Errorf("%s: err = %v, want ErrBadEntry", name, err)
		}
	}
	if k, ok := logindex.ContainerQueryKey("0123456789a"); ok {
		t.Fatalf("an 11-character prefix has key %q", k)
	}
	if k, ok := logindex.ContainerQueryKey("0123456789abcd"); !ok || k != "c:0123456789ab" {
		t.Fatalf("ContainerQueryKey = %q, %v", k, ok)
	}
}

func TestSegments(t *testing.T) {
	s := events.NodeStream("n1")
	en := func(first, last uint64) *logindex.Entry { return logindex.NewEntry(s, first, last, events.Hash{}, nil) }
	type seg struct {
		first, last uint64
		indexed     bool
	}
	for _, tc := range []struct {
		name     string
		entries  []*logindex.Entry
		from, hd uint64
		want     []seg
	}{
		{"none", nil, 1, 10, []seg{{1, 10, false}}},
		{"all and a tail", []*logindex.Entry{en(1, 4), en(5, 8)}, 1, 10, []seg{{1, 4, true}, {5, 8, true}, {9, 10, false}}},
		{"missing in the middle", []*logindex.Entry{en(1, 4), en(9, 12)}, 1, 12, []seg{{1, 4, true}, {5, 8, false}, {9, 12, true}}},
		{"missing first", []*logindex.Entry{en(5, 8)}, 1, 8, []seg{{1, 4, false}, {5, 8, true}}},
		{"overlapping ignored", []*logindex.Entry{en(1, 8), en(5, 12), en(9, 12)}, 1, 12, []seg{{1, 8, true}, {9, 12, true}}},
		{"past the head ignored", []*logindex.Entry{en(1, 4), en(5, 8)}, 1, 6, []seg{{1, 4, true}, {5, 6, false}}},
		{"before from ignored", []*logindex.Entry{en(1, 4), en(5, 8)}, 3, 8, []seg{{3, 4, false}, {5, 8, true}}},
		{"empty stream", nil, 1, 0, nil},
	} {
		var got []seg
		for _, g := range logindex.Segments(tc.entries, tc.from, tc.hd) {
			got = append(got, seg{g.First, g.Last, g.Entry != nil})
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestBuild: Build writes one entry per complete chunk, reading only missing chunks;
// concurrent builders write each entry once and agree on its bytes; Verify accepts them;
// ReadRange reads a chunk checked against the previous entry's hash.
func TestBuild(t *testing.T) {
	c := etcdtest.Start(t)
	cli := c.Client(t)
	lg := events.NewEtcdLog(cli, events.EtcdConfig{})
	t.Cleanup(func() { _ = lg.Close() })
	keys := lg.Keys()
	s := events.NodeStream("n1")
	churn(t, lg, s, 4500) // 4 complete chunks, 404 events in the tail
	ctx := ctxT(t)

	const builders = 4
	var wg sync.WaitGroup
	res := make([]logindex.BuildResult, builders)
	errs := make([]error, builders)
	for i := range builders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = logindex.Build(ctx, lg, s, logindex.BuildOptions{})
		}()
	}
	wg.Wait()
	written := 0
	for i, r := range res {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if r.Chunks != 4 || r.Written+r.Present != 4 {
			t.Fatalf("builder %d: %+v", i, r)
		}
		written += r.Written
	}
	if written != 4 {
		t.Fatalf("concurrent builders wrote %d entries, want 4", written)
	}
	stored := func() map[string]string {
		r, err := cli.Get(ctx, keys.IndexPrefix(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, kv := range r.Kvs {
			m[string(kv.Key)] = string(kv.Value)
		}
		return m
	}
	first := stored()
	if len(first) != 4 || first[keys.Index(s, 3073)] == "" {
		t.Fatalf("stored keys %d, want 4 (…/000000003073 among them)", len(first))
	}
	// Again: nothing to do. Deleted and rebuilt: the same bytes.
	if r, err := logindex.Build(ctx, lg, s, logindex.BuildOptions{}); err != nil || r.Written != 0 || r.Present != 4 || r.EventsRead != 0 {
		t.Fatalf("second build: %+v, %v", r, err)
	}
	if n, err := logindex.Delete(ctx, lg, s); err != nil || n != 4 {
		t.Fatalf("Delete: %d, %v", n, err)
	}
	if r, err := logindex.Build(ctx, lg, s, logindex.BuildOptions{}); err != nil || r.Written != 4 || r.EventsRead != 4096 {
		t.Fatalf("rebuild: %+v, %v", r, err)
	}
	for k, v := range stored() {
		if first[k] != v {
			t.Fatalf("%s differs after a rebuild", k)
		}
	}

	es, err := logindex.Load(ctx, lg, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	head, rev, err := lg.Head(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	ok, hasFirst, err := logindex.Verify(ctx, lg, s, es[s], rev)
	if err != nil || !hasFirst || len(ok) != 4 {
		t.Fatalf("Verify: %d entries, hasFirst %v, %v", len(ok), hasFirst, err)
	}
	// Chunk 2 mentions pod-600 (events #1201, #1202), chunk 1 does not.
	if !ok[1].MayContain(logindex.PodKey("churn", "pod-600")) {
		t.Fatal("chunk 2 lacks pod-600")
	}
	prev := events.Version{Seq: ok[0].Last, Hash: ok[0].Hash}
	n := 0
	v, err := lg.ReadRange(ctx, s, 1025, 2048, rev, &prev, func(*events.Event) error { n++; return nil })
	if err != nil || n != 1024 || v.Seq != 2048 || v.Hash != ok[1].Hash {
		t.Fatalf("ReadRange: %d events, %v, %v", n, v, err)
	}
	bad := events.Version{Seq: 1024, Hash: events.Hash{9}}
	if _, err = lg.ReadRange(ctx, s, 1025, 2048, rev, &bad, func(*events.Event) error { return nil }); !errors.Is(err, events.ErrChainBroken) {
		t.Fatalf("ReadRange after a wrong hash: %v, want ErrChainBroken", err)
	}
	if v, err = lg.ReadRange(ctx, s, 4097, head.Seq, rev, nil, func(*events.Event) error { return nil }); err != nil || v != head {
		t.Fatalf("ReadRange of the tail: %v, %v (head %v)", v, err, head)
	}

	// An entry that describes another log (its hash differs) is not verified.
	forged := logindex.NewEntry(s, 1, 1024, events.Hash{7}, nil)
	fb, err := forged.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err = cli.Put(ctx, keys.Index(s, 1), string(fb)); err != nil {
		t.Fatal(err)
	}
	es, err = logindex.Load(ctx, lg, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err = logindex.Verify(ctx, lg, s, es[s], 0); err != nil || len(ok) != 3 || ok[0].First != 1025 {
		t.Fatalf("Verify with a stale entry: %d kept, %v", len(ok), err)
	}
	// DeleteThrough removes the entries wholly at or below a sequence.
	if n, err := logindex.DeleteThrough(ctx, lg, s, 2500); err != nil || n != 2 {
		t.Fatalf("DeleteThrough: %d, %v", n, err)
	}
	if left := stored(); len(left) != 2 || left[keys.Index(s, 2049)] == "" {
		t.Fatalf("after DeleteThrough: %d keys", len(left))
	}
}
