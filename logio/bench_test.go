package logio_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/logio"
)

// benchEvents is the log size: 100k, or 1M with COIL_BENCH_1M=1.
func benchEvents() int {
	if os.Getenv("COIL_BENCH_1M") == "1" {
		return 1_000_000
	}
	return 100_000
}

// BenchmarkLogIO fills an fsync-on etcd with n realistic events (AddressAssigned and
// AddressReleased pairs on 20 node streams), then measures export (to a file, sampling
// the heap in use meanwhile), verify of the live log, verify of the file, and import into
// a second fsync-on etcd.
func BenchmarkLogIO(b *testing.B) {
	n := benchEvents()
	const nodes = 20
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	src := etcdtest.Start(b, etcdtest.WithFsync(), etcdtest.WithQuota(8<<30))
	cli := src.Client(b)
	lg := events.NewEtcdLog(cli, events.EtcdConfig{})
	defer lg.Close()
	start := time.Now()
	fillNodes(b, ctx, cli, lg.Keys(), nodes, n)
	b.Logf("filled %d events in %s", n, time.Since(start).Round(time.Millisecond))
	path := filepath.Join(b.TempDir(), "export.jsonl")

	for b.Loop() {
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		stop := make(chan struct{})
		var peak uint64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			var ms runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapInuse)
				}
			}
		}()
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := logio.Export(ctx, lg, f, logio.ExportOptions{}); err != nil {
			b.Fatal(err)
		}
		exportS := time.Since(t0).Seconds()
		close(stop)
		wg.Wait()
		_ = f.Close()
		st, _ := os.Stat(path)

		t0 = time.Now()
		if _, err := logio.NewVerifier().Live(ctx, lg); err != nil {
			b.Fatal(err)
		}
		liveS := time.Since(t0).Seconds()

		f, err = os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		if _, err := logio.NewVerifier().File(ctx, f); err != nil {
			b.Fatal(err)
		}
		fileS := time.Since(t0).Seconds()
		_ = f.Close()

		dst := etcdtest.Start(b, etcdtest.WithFsync(), etcdtest.WithQuota(8<<30))
		dl := events.NewEtcdLog(dst.Client(b), events.EtcdConfig{})
		t0 = time.Now()
		if _, err := logio.Import(ctx, dl, path, logio.ImportOptions{}); err != nil {
			b.Fatal(err)
		}
		importS := time.Since(t0).Seconds()
		_ = dl.Close()
		dst.Stop()

		b.ReportMetric(float64(n)/exportS, "export-events/s")
		b.ReportMetric(float64(n)/liveS, "verify-live-events/s")
		b.ReportMetric(float64(n)/fileS, "verify-file-events/s")
		b.ReportMetric(float64(n)/importS, "import-events/s")
		b.ReportMetric(float64(peak-min(peak, base.HeapInuse))/(1<<20), "export-heap-MiB")
		b.ReportMetric(float64(st.Size())/float64(n), "file-B/event")
		b.ReportMetric(0, "ns/op")
		b.Logf("n=%d export %.2fs, verify live %.2fs, verify file %.2fs, import %.2fs; heap in use during export: peak %.1f MiB (base %.1f MiB); file %d MB",
			n, exportS, liveS, fileS, importS, float64(peak)/(1<<20), float64(base.HeapInuse)/(1<<20), st.Size()>>20)
	}
}

// fillNodes writes n sealed events spread over node streams with raw transactions
// (several in flight), as a busy cluster's pod churn would have left them.
func fillNodes(b *testing.B, ctx context.Context, cli *clientv3.Client, keys events.Keys, nodes, n int) {
	b.Helper()
	per := n / nodes
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	sem := make(chan struct{}, 8)
	for k := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := events.NodeStream(fmt.Sprintf("worker-%03d", k))
			rng := rand.New(rand.NewPCG(uint64(k), 7))
			var head events.Version
			var live []*events.AddressAssigned
			for done := 0; done < per; {
				cnt := min(events.MaxBatch, per-done)
				evs := make([]*events.Event, cnt)
				for i := range evs {
					j := done + i
					if len(live) > 0 && (rng.IntN(2) == 0 || len(live) > 200) {
						a := live[0]
						live = live[1:]
						evs[i] = &events.Event{Time: time.Unix(1_800_000_000+int64(j), 0).UTC(), Actor: string(s)[5:],
							Payload: &events.AddressReleased{ContainerID: a.ContainerID, IfName: a.IfName, Pool: a.Pool, Block: a.Block, Addrs: a.Addrs, Reason: "CNI DEL"}}
						continue
					}
					a := assigned(rng, j)
					live = append(live, a)
					evs[i] = &events.Event{Time: time.Unix(1_800_000_000+int64(j), 0).UTC(), Actor: string(s)[5:], Payload: a}
				}
				req := events.AppendRequest{Stream: s, Expected: head, Events: evs}
				sealed, h, err := events.Seal(&req)
				if err != nil {
					errs <- err
					return
				}
				ops := make([]clientv3.Op, 0, len(sealed)+1)
				for _, x := range sealed {
					ops = append(ops, clientv3.OpPut(keys.Event(s, x.Seq), string(x.Value)))
				}
				ops = append(ops, clientv3.OpPut(keys.Head(s), string(events.EncodeHead(h))))
				sem <- struct{}{}
				_, err = cli.Txn(ctx).Then(ops...).Commit()
				<-sem
				if err != nil {
					errs <- err
					return
				}
				head = h
				done += cnt
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

func assigned(rng *rand.Rand, i int) *events.AddressAssigned {
	var id [32]byte
	for j := range id {
		id[j] = byte(rng.Uint32())
	}
	var uid [16]byte
	for j := range uid {
		uid[j] = byte(rng.Uint32())
	}
	u := hex.EncodeToString(uid[:])
	return &events.AddressAssigned{
		ContainerID:  hex.EncodeToString(id[:]),
		IfName:       "eth0",
		PodNamespace: "team-payments",
		PodName:      fmt.Sprintf("checkout-api-7d9f8c6b5-%05d", i%100000),
		PodUID:       u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:],
		Pool:         "default",
		Block:        uint32(i/32) % 4096,
		Addrs:        []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})},
	}
}
