package logio_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
	"github.com/coil-net/coil/internal/etcdtest"
	"github.com/coil-net/coil/internal/gobuild"
)

// benchEvents is the log size: 100k, or 1M with COIL_BENCH_1M=1.
func benchEvents() int {
	if os.Getenv("COIL_BENCH_1M") == "1" {
		return 1_000_000
	}
	return 100_000
}

// BenchmarkLogIO fills an fsync-on etcd with n realistic events (AddressAssigned and
// AddressReleased pairs on 20 node streams), then runs the coilctl binary (a separate
// process, as an operator would) for: log export to a file, log verify (live), log verify
// --file, and log import into a second fsync-on etcd. It reports each rate and coilctl's
// maximum resident set size (getrusage of the child) per command.
func BenchmarkLogIO(b *testing.B) {
	n := benchEvents()
	const nodes = 20
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	dir := b.TempDir()
	coilctl := filepath.Join(dir, "coilctl")
	if err := gobuild.Build(ctx, coilctl, "./cmd/coilctl", false); err != nil {
		b.Fatalf("build coilctl: %v", err)
	}
	src := etcdtest.Start(b, etcdtest.WithFsync(), etcdtest.WithQuota(8<<30))
	cli := src.Client(b)
	lg := events.NewEtcdLog(cli, events.EtcdConfig{})
	defer lg.Close()
	start := time.Now()
	fillNodes(b, ctx, cli, lg.Keys(), nodes, n)
	b.Logf("filled %d events in %s", n, time.Since(start).Round(time.Millisecond))
	path := filepath.Join(dir, "export.jsonl")

	run := func(endpoint string, args ...string) (float64, int64) {
		b.Helper()
		cmd := exec.CommandContext(ctx, coilctl, append([]string{"--etcd-endpoints", endpoint, "--timeout", "60s"}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		began := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		// The child's peak RSS: VmHWM of its own memory, sampled while it runs (getrusage's
		// maxrss is useless here: Go starts children with vfork, and the kernel counts the
		// parent's RSS, this benchmark's in-process etcd, as the child's high-water mark).
		done := make(chan struct{})
		var rss int64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
			for {
				if v := vmHWM(status); v > rss {
					rss = v
				}
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		}()
		err := cmd.Wait()
		close(done)
		wg.Wait()
		if err != nil {
			b.Fatalf("coilctl %v: %v: %s", args, err, stderr.String())
		}
		return time.Since(began).Seconds(), rss
	}
	for b.Loop() {
		_ = os.Remove(path)
		ep := src.Endpoints()[0]
		exportS, exportRSS := run(ep, "log", "export", path)
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		liveS, liveRSS := run(ep, "log", "verify")
		fileS, fileRSS := run(ep, "log", "verify", "--file", path)
		dst := etcdtest.Start(b, etcdtest.WithFsync(), etcdtest.WithQuota(8<<30))
		importS, importRSS := run(dst.Endpoints()[0], "log", "import", path)
		dst.Stop()

		b.ReportMetric(float64(n)/exportS, "export-events/s")
		b.ReportMetric(float64(n)/liveS, "verify-live-events/s")
		b.ReportMetric(float64(n)/fileS, "verify-file-events/s")
		b.ReportMetric(float64(n)/importS, "import-events/s")
		b.ReportMetric(float64(exportRSS)/1024, "export-maxRSS-MiB")
		b.ReportMetric(float64(st.Size())/float64(n), "file-B/event")
		b.ReportMetric(0, "ns/op")
		b.Logf("n=%d: export %.2fs (max RSS %d MiB), verify live %.2fs (%d MiB), verify file %.2fs (%d MiB), import %.2fs (%d MiB); file %d MB",
			n, exportS, exportRSS>>10, liveS, liveRSS>>10, fileS, fileRSS>>10, importS, importRSS>>10, st.Size()>>20)
	}
}

// fillNodes writes n sealed events spread over node streams with raw transactions
// (several in flight), as a busy cluster's pod churn would have left them.
func fillNodes(b *testing.B, ctx context.Context, cli *clientv3.Client, keys events.Keys, nodes, n int) {
	b.Helper()
	per := n / nodes
	fills := make([]eventstest.FillStream, nodes)
	for k := range nodes {
		s := events.NodeStream(fmt.Sprintf("worker-%03d", k))
		rng := rand.New(rand.NewPCG(uint64(k), 7))
		var live []*events.AddressAssigned
		fills[k] = eventstest.FillStream{Stream: s, N: per, Next: func(j int) *events.Event {
			if len(live) > 0 && (rng.IntN(2) == 0 || len(live) > 200) {
				a := live[0]
				live = live[1:]
				return &events.Event{Time: time.Unix(1_800_000_000+int64(j), 0).UTC(), Actor: string(s)[5:],
					Payload: &events.AddressReleased{ContainerID: a.ContainerID, IfName: a.IfName, Pool: a.Pool, Block: a.Block, Addrs: a.Addrs, Reason: "CNI DEL"}}
			}
			a := eventstest.RealisticAssigned(rng, j)
			live = append(live, a)
			return &events.Event{Time: time.Unix(1_800_000_000+int64(j), 0).UTC(), Actor: string(s)[5:], Payload: a}
		}}
	}
	if _, err := eventstest.Fill(ctx, cli, keys, 8, fills...); err != nil {
		b.Fatal(err)
	}
}

// vmHWM reads a process's peak resident set size (KiB) from /proc/PID/status; 0 if gone.
func vmHWM(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			_, _ = fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), &kb)
			return kb
		}
	}
	return 0
}
