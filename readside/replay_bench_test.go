package readside_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/projection"
	"github.com/coil-net/coil/readside"
)

// podChurn generates a node's realistic address events: pod i is assigned an address
// (cycling through the node's 256-address block) and released 100 pods later, so about
// 100 pods are up at any time and every event folds.
type podChurn struct {
	node  string
	base  netip.Addr
	i     int
	held  []int
	clock time.Time
}

func (p *podChurn) next() *events.Event {
	p.clock = p.clock.Add(time.Second)
	if len(p.held) >= 100 {
		k := p.held[0]
		p.held = p.held[1:]
		return &events.Event{Time: p.clock, Actor: p.node, Payload: &events.AddressReleased{
			ContainerID: fmt.Sprintf("%064x", k), IfName: "eth0", Pool: "default", Block: 0,
			Addrs: []netip.Addr{p.addr(k)}, Reason: "CNI DEL",
		}}
	}
	k := p.i
	p.i++
	p.held = append(p.held, k)
	return &events.Event{Time: p.clock, Actor: p.node, Payload: &events.AddressAssigned{
		ContainerID: fmt.Sprintf("%064x", k), IfName: "eth0", PodNamespace: "team-a", PodName: fmt.Sprintf("web-%d", k),
		PodUID: fmt.Sprintf("%08x-0000-4000-8000-%012x", k, k), Pool: "default", Block: 0, Addrs: []netip.Addr{p.addr(k)},
	}}
}

func (p *podChurn) addr(k int) netip.Addr {
	return projection.AddrAt(netip.PrefixFrom(p.base, 24), uint64(k%256))
}

// fillStream writes n events of gen to a stream with raw batched puts (no compares: the
// benchmark set-up only; eventstest.Fill), continuing from head, and returns the new head.
func fillStream(b *testing.B, cli *clientv3.Client, keys events.Keys, s events.Stream, head events.Version, n int, gen func() *events.Event) events.Version {
	b.Helper()
	heads, err := eventstest.Fill(context.Background(), cli, keys, 4,
		eventstest.FillStream{Stream: s, Head: head, N: n, Next: func(int) *events.Event { return gen() }})
	if err != nil {
		b.Fatal(err)
	}
	return heads[0]
}

// replayFixture: 8 node streams of pod churn, 1M events in all with COIL_BENCH_1M=1
// (else 100k), in an etcd without fsync (set-up speed; reads do not fsync).
func replayFixture(b *testing.B) (events.Log, *clientv3.Client, []events.Stream, map[events.Stream]*podChurn, map[events.Stream]events.Version, int) {
	b.Helper()
	total := 100_000
	if os.Getenv("COIL_BENCH_1M") == "1" {
		total = 1_000_000
	}
	c := etcdtest.Start(b, etcdtest.WithQuota(8<<30))
	cli := c.Client(b)
	log := events.NewEtcdLog(cli, events.EtcdConfig{Prefix: "/coil/"})
	b.Cleanup(func() { _ = log.Close() })
	keys := events.NewKeys("/coil/")
	const nodes = 8
	var streams []events.Stream
	gens := map[events.Stream]*podChurn{}
	heads := map[events.Stream]events.Version{}
	start := time.Now()
	for i := range nodes {
		name := fmt.Sprintf("node-%d", i)
		s := events.NodeStream(name)
		g := &podChurn{node: name, base: netip.AddrFrom4([4]byte{10, 1, byte(i), 0}), clock: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		heads[s] = fillStream(b, cli, keys, s, events.Version{}, total/nodes, g.next)
		streams = append(streams, s)
		gens[s] = g
	}
	b.Logf("filled %d events in %d streams in %s", total, nodes, time.Since(start).Round(time.Millisecond))
	return log, cli, streams, gens, heads, total
}

// BenchmarkReplay: a full replay of every stream from etcd into the projection
// (decode, hash-chain check, fold), streams read concurrently.
func BenchmarkReplay(b *testing.B) {
	log, _, streams, _, _, total := replayFixture(b)
	ctx := context.Background()
	b.ResetTimer()
	var sum time.Duration
	runs := 0
	for b.Loop() {
		t0 := time.Now()
		st, err := readside.Replay(ctx, log, streams, 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		sum += time.Since(t0)
		runs++
		if len(st.Nodes) != len(streams) {
			b.Fatalf("replayed %d streams", len(st.Nodes))
		}
	}
	per := sum.Seconds() / float64(runs)
	b.ReportMetric(per, "s/replay")
	b.ReportMetric(float64(total)/per, "events/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkReplayFromSnapshot: the same log with a snapshot near the end of each stream
// and 1,000 events after it; replay starts at the snapshots (cost ∝ the tail).
func BenchmarkReplayFromSnapshot(b *testing.B) {
	log, cli, streams, gens, heads, _ := replayFixture(b)
	ctx := context.Background()
	keys := events.NewKeys("/coil/")
	snapAt := map[events.Stream]uint64{}
	full, err := readside.Replay(ctx, log, streams, 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	const tail = 1000
	for _, s := range streams {
		snap, err := projection.SnapshotOf(full.StreamState(s))
		if err != nil {
			b.Fatal(err)
		}
		h, err := log.Append(ctx, events.AppendRequest{Stream: s, Expected: heads[s], Events: []*events.Event{{Time: gens[s].clock, Actor: "bench", Payload: snap}}})
		if err != nil {
			b.Fatal(err)
		}
		snapAt[s] = h.Seq
		fillStream(b, cli, keys, s, h, tail, gens[s].next)
	}
	b.ResetTimer()
	var sum time.Duration
	runs := 0
	for b.Loop() {
		t0 := time.Now()
		if _, err := readside.Replay(ctx, log, streams, 0, func(_ context.Context, s events.Stream) (uint64, error) { return snapAt[s], nil }); err != nil {
			b.Fatal(err)
		}
		sum += time.Since(t0)
		runs++
	}
	per := sum.Seconds() / float64(runs)
	b.ReportMetric(per*1000, "ms/replay")
	b.ReportMetric(float64(tail*len(streams)), "tail-events")
	b.ReportMetric(0, "ns/op")
}
