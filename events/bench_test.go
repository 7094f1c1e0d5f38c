package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
	"github.com/coil-net/coil/internal/etcdtest"
)

// realisticAssigned is eventstest.RealisticAssigned in its envelope, as coild writes it.
func realisticAssigned(rng *rand.Rand, i int) *events.Event {
	return &events.Event{
		Time:    eventstest.Base.Add(time.Duration(i) * time.Millisecond),
		Actor:   "coild/worker-017",
		Payload: eventstest.RealisticAssigned(rng, i),
	}
}

func bctx(b *testing.B) context.Context {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkAppend: events/s through EtcdLog.Append with fsync on, 64 concurrent producers
// each on its own node stream, one event per transaction versus batches (group commit).
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 32, events.MaxBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			c := etcdtest.Start(b, etcdtest.WithFsync())
			l := events.NewEtcdLog(c.Client(b), events.EtcdConfig{})
			defer l.Close()
			ctx := bctx(b)
			const producers = 64
			per := max(1, (b.N+producers-1)/producers)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			errc := make(chan error, producers)
			for p := 0; p < producers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(p), 1))
					s := events.NodeStream(fmt.Sprintf("worker-%03d", p))
					var head events.Version
					for done := 0; done < per; {
						k := min(batch, per-done)
						evs := make([]*events.Event, k)
						for i := range evs {
							evs[i] = realisticAssigned(rng, done+i)
						}
						h, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head, Events: evs})
						if err != nil {
							errc <- err
							return
						}
						head = h
						done += k
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errc)
			for err := range errc {
				b.Fatal(err)
			}
			total := per * producers
			b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// fill writes n realistic events to stream quickly for read benchmarks: sealed in order,
// committed by parallel transactions without compares, then the head.
func fill(b *testing.B, cli *clientv3.Client, keys events.Keys, s events.Stream, n int) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	if _, err := eventstest.Fill(bctx(b), cli, keys, 8,
		eventstest.FillStream{Stream: s, N: n, Next: func(i int) *events.Event { return realisticAssigned(rng, i) }}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRead: read a whole stream from etcd into decoded, chain-checked events.
// 100k events by default; COIL_BENCH_1M=1 reads 1M. The fill runs without fsync.
func BenchmarkRead(b *testing.B) {
	n := 100_000
	if os.Getenv("COIL_BENCH_1M") == "1" {
		n = 1_000_000
	}
	c := etcdtest.Start(b, etcdtest.WithQuota(8<<30))
	cli := c.Client(b)
	l := events.NewEtcdLog(cli, events.EtcdConfig{})
	defer l.Close()
	s := events.NodeStream("big")
	fillStart := time.Now()
	fill(b, cli, l.Keys(), s, n)
	b.Logf("filled %d events in %s", n, time.Since(fillStart).Round(time.Millisecond))
	ctx := bctx(b)
	b.ResetTimer()
	var total time.Duration
	runs := 0
	for b.Loop() {
		start := time.Now()
		got := 0
		if _, err := l.Read(ctx, s, 1, 0, func(*events.Event) error { got++; return nil }); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		runs++
		if got != n {
			b.Fatalf("read %d events, want %d", got, n)
		}
	}
	per := total.Seconds() / float64(runs)
	b.ReportMetric(float64(n)/per, "events/s")
	b.ReportMetric(per, "s/read")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDecode: decoding (and hashing) one stored AddressAssigned.
func BenchmarkDecode(b *testing.B) {
	e := realisticAssigned(rand.New(rand.NewPCG(3, 4)), 5)
	e.Stream, e.Seq = events.NodeStream("worker-017"), 1
	v, err := events.Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("binary", func(b *testing.B) {
		b.ReportMetric(float64(len(v)), "bytes/event")
		dec := events.NewDecoder() // as a replay decodes: names interned
		for b.Loop() {
			if _, err := dec.Decode(e.Stream, 1, v); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The baseline: a plain JSON envelope with a typed payload through encoding/json
	// (no hashing), what storing events as JSON would cost per decode.
	type jsonEnvelope struct {
		Schema  int                     `json:"schema"`
		Stream  string                  `json:"stream"`
		Seq     uint64                  `json:"seq"`
		Type    string                  `json:"type"`
		Time    time.Time               `json:"time"`
		Actor   string                  `json:"actor"`
		Prev    events.Hash             `json:"prev"`
		Payload *events.AddressAssigned `json:"payload"`
	}
	b.Run("json-baseline", func(b *testing.B) {
		j, err := json.Marshal(jsonEnvelope{Schema: 1, Stream: string(e.Stream), Seq: 1, Type: string(e.Type()), Time: e.Time, Actor: e.Actor, Prev: e.Prev, Payload: e.Payload.(*events.AddressAssigned)})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(j)), "bytes/event")
		for b.Loop() {
			var got jsonEnvelope
			if err := json.Unmarshal(j, &got); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBytesPerEvent: etcd database bytes per realistic AddressAssigned event, before
// and after compaction + defragmentation (fsync on). Appends 100k events in batches of
// MaxBatch through EtcdLog.
func BenchmarkBytesPerEvent(b *testing.B) {
	b.Run("binary", func(b *testing.B) { bytesPerEvent(b, false) })
	// The baseline: the same events stored as their JSON form (what a plain JSON envelope costs).
	b.Run("json-baseline", func(b *testing.B) { bytesPerEvent(b, true) })
}

func bytesPerEvent(b *testing.B, asJSON bool) {
	b.Helper()
	const n = 100_000
	for b.Loop() {
		c := etcdtest.Start(b, etcdtest.WithFsync())
		cli := c.Client(b)
		l := events.NewEtcdLog(cli, events.EtcdConfig{})
		keys := l.Keys()
		ctx := bctx(b)
		ep := c.Endpoints()[0]
		status := func() (int64, int64) {
			st, err := cli.Status(ctx, ep)
			if err != nil {
				b.Fatal(err)
			}
			return st.DbSize, st.DbSizeInUse
		}
		// Defragment the fresh database so the baseline is what it really holds.
		if _, err := cli.Defragment(ctx, ep); err != nil {
			b.Fatal(err)
		}
		size0, use0 := status()
		rng := rand.New(rand.NewPCG(5, 6))
		s := events.NodeStream("worker-017")
		var head events.Version
		var encoded int
		for done := 0; done < n; {
			k := min(events.MaxBatch, n-done)
			evs := make([]*events.Event, k)
			for i := range evs {
				evs[i] = realisticAssigned(rng, done+i)
			}
			if !asJSON {
				h, err := l.Append(ctx, events.AppendRequest{Stream: s, Expected: head, Events: evs})
				if err != nil {
					b.Fatal(err)
				}
				head = h
				for _, e := range evs {
					v, _ := events.Encode(e)
					encoded += len(v)
				}
			} else {
				sealed, h, err := events.Seal(&events.AppendRequest{Stream: s, Expected: head, Events: evs})
				if err != nil {
					b.Fatal(err)
				}
				ops := make([]clientv3.Op, 0, len(sealed)+1)
				for i, x := range sealed {
					j, err := json.Marshal(evs[i])
					if err != nil {
						b.Fatal(err)
					}
					encoded += len(j)
					ops = append(ops, clientv3.OpPut(keys.Event(s, x.Seq), string(j)))
				}
				ops = append(ops, eventstest.PutHead(keys, s, h))
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					b.Fatal(err)
				}
				head = h
			}
			done += k
		}
		size1, use1 := status()
		_, rev, err := l.Head(ctx, s)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
			b.Fatal(err)
		}
		if _, err := cli.Defragment(ctx, ep); err != nil {
			b.Fatal(err)
		}
		size2, use2 := status()
		l.Close()
		b.Logf("db size: fresh %d (in use %d), after %d events %d (in use %d), after compact+defrag %d (in use %d)",
			size0, use0, n, size1, use1, size2, use2)
		b.ReportMetric(float64(encoded)/n, "value-B/event")
		b.ReportMetric(float64(size1-size0)/n, "db-B/event")
		b.ReportMetric(float64(use1-use0)/n, "inuse-B/event")
		b.ReportMetric(float64(size2-size0)/n, "defrag-B/event")
		b.ReportMetric(0, "ns/op")
	}
}
