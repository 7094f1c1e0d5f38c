package cli_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/internal/etcdtest"
)

// fillNodeStreams writes a log of about total events into etcd: pool "default"
// (10.0.0.0/8 in /24 blocks), block i assigned to node-i, and node streams of alternating
// AddressAssigned / AddressReleased, each node cycling through 250 addresses of its
// block (10.0.i.3 to 10.0.i.252). The node streams are sealed as the log seals them and
// put with raw transactions of events.MaxBatch events plus the head. Node i's address
// 10.0.i.3 is held about total/nodes/500 times.
func fillNodeStreams(tb testing.TB, cli *clientv3.Client, nodes, total int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	keys := events.NewKeys("")
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	lg := events.NewEtcdLog(cli, events.EtcdConfig{})
	defer lg.Close()
	pool := &events.PoolCreated{Name: "default", BlockSizeBits: 8,
		Subnets: []events.Subnet{{IPv4: netip.MustParsePrefix("10.0.0.0/8")}}}
	if _, err := lg.Append(ctx, events.AppendRequest{Stream: events.ClusterStream,
		Events: []*events.Event{{Time: start, Actor: "coilctl:bench", Payload: pool}}}); err != nil {
		tb.Fatal(err)
	}
	var head events.Version
	for lo := 0; lo < nodes; lo += events.MaxBatch {
		var evs []*events.Event
		for n := lo; n < min(nodes, lo+events.MaxBatch); n++ {
			evs = append(evs, &events.Event{Time: start, Actor: fmt.Sprintf("node-%03d", n),
				Payload: &events.BlockAssigned{Index: uint64(n), Node: fmt.Sprintf("node-%03d", n)}})
		}
		var err error
		if head, err = lg.Append(ctx, events.AppendRequest{Stream: events.PoolStream("default"), Expected: head, Events: evs}); err != nil {
			tb.Fatal(err)
		}
	}
	per := total / nodes
	fills := make([]eventstest.FillStream, nodes)
	for n := range nodes {
		name := fmt.Sprintf("node-%03d", n)
		fills[n] = eventstest.FillStream{Stream: events.NodeStream(name), N: per, Next: func(i int) *events.Event {
			slot := (i / 2) % 250
			addr := netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), byte(slot + 3)})
			sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", name, i/2)))
			id := hex.EncodeToString(sum[:])
			tm := start.Add(time.Duration(i) * time.Second)
			var p events.Payload
			if i%2 == 0 {
				p = &events.AddressAssigned{ContainerID: id, IfName: "eth0", PodNamespace: "bench",
					PodName: fmt.Sprintf("pod-%d-%d", n, i/2), Pool: "default", Block: uint64(n), Addrs: []netip.Addr{addr}}
			} else {
				p = &events.AddressReleased{ContainerID: id, IfName: "eth0", Pool: "default", Block: uint64(n),
					Addrs: []netip.Addr{addr}, Reason: "CNI DEL"}
			}
			return &events.Event{Time: tm, Actor: name, Payload: p}
		}}
	}
	if _, err := eventstest.Fill(ctx, cli, keys, 4, fills...); err != nil {
		tb.Fatal(err)
	}
}

// benchLog starts etcd and fills it with a log of 100k events in 100 node streams, or 1M
// with COIL_BENCH_1M=1 (fillNodeStreams), then builds the attachment index with coilctl
// log index (the fill and the build are timed and logged). It returns the client, the
// endpoints and the number of events.
func benchLog(b *testing.B) (*clientv3.Client, string, int) {
	b.Helper()
	total := 100_000
	if os.Getenv("COIL_BENCH_1M") == "1" {
		total = 1_000_000
	}
	const nodes = 100
	c := etcdtest.Start(b, etcdtest.WithQuota(8<<30))
	cl := c.Client(b)
	start := time.Now()
	fillNodeStreams(b, cl, nodes, total)
	b.Logf("filled %d events in %d node streams in %s", total, nodes, time.Since(start).Round(time.Millisecond))
	endpoints := strings.Join(c.Endpoints(), ",")
	var out, errb strings.Builder
	start = time.Now()
	args := []string{"--etcd-endpoints", endpoints, "--timeout", "60s", "log", "index", "-o", "json"}
	if code := cli.Main(context.Background(), args, cli.Env{Stdout: &out, Stderr: &errb}); code != 0 {
		b.Fatalf("log index: exit %d: %s", code, errb.String())
	}
	took := time.Since(start)
	b.Logf("log index: built the index of %d events in %s (%.0f events/s): %.200s", total, took.Round(time.Millisecond),
		float64(total)/took.Seconds(), out.String())
	return cl, endpoints, total
}

// benchCase is one query of a coilctl benchmark: cmd (history, events) with query, whose
// output must contain want; scan deletes the attachment index first.
type benchCase struct {
	name  string
	query []string
	want  string
	scan  bool
}

// runBench runs each case of coilctl cmd -o json as a sub-benchmark (once outside the
// timing, checked, then timed), reporting the log's events per second.
func runBench(b *testing.B, cl *clientv3.Client, endpoints string, total int, cmd string, cases []benchCase) {
	b.Helper()
	for _, bc := range cases {
		if bc.scan {
			if _, err := cl.Delete(context.Background(), events.NewKeys("").IndexPrefix(), clientv3.WithPrefix()); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(bc.name, func(b *testing.B) {
			args := append([]string{"--etcd-endpoints", endpoints, "--timeout", "60s", cmd, "-o", "json"}, bc.query...)
			var out, errb strings.Builder
			if code := cli.Main(context.Background(), args, cli.Env{Stdout: &out, Stderr: &errb}); code != 0 {
				b.Fatalf("%s: exit %d: %s", cmd, code, errb.String())
			}
			if !strings.Contains(out.String(), bc.want) {
				b.Fatalf("%s %v did not print %q:\n%.500s", cmd, bc.query, bc.want, out.String())
			}
			b.ResetTimer()
			for b.Loop() {
				if code := cli.Main(context.Background(), args, cli.Env{Stdout: io.Discard, Stderr: io.Discard}); code != 0 {
					b.Fatalf("%s: exit %d", cmd, code)
				}
			}
			b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "log-events/s")
		})
	}
}

// BenchmarkHistory measures coilctl history end to end (connect, read the streams at one
// revision, pair assignments and releases, print) on benchLog's log: "address" asks for
// an address (only the node streams of its block's owners are read); "pod" and
// "container" (a 12-character prefix) ask with the attachment index; "pod-scan" asks for
// the same pod once the index is deleted (every node stream read in full: the baseline).
func BenchmarkHistory(b *testing.B) {
	cl, endpoints, total := benchLog(b)
	// Node 42's pod 0 is in each stream's first chunk; its container ID is sha256("node-042/0").
	runBench(b, cl, endpoints, total, "history", []benchCase{
		{"address", []string{"10.0.7.3"}, `"node": "node-007"`, false},
		{"pod", []string{"--pod", "bench/pod-42-0"}, `"node": "node-042"`, false},
		{"container", []string{"--container", benchContainer}, `"node": "node-042"`, false},
		{"pod-scan", []string{"--pod", "bench/pod-42-0"}, `"node": "node-042"`, true},
	})
}

// BenchmarkEvents measures coilctl events --pod and --container (the initial read: every
// node stream and the cluster stream at one revision, merged in revision order, printed)
// on benchLog's log: "pod" and "container" with the attachment index, "pod-scan" once it
// is deleted (every stream read in full: the baseline).
func BenchmarkEvents(b *testing.B) {
	cl, endpoints, total := benchLog(b)
	runBench(b, cl, endpoints, total, "events", []benchCase{
		{"pod", []string{"--pod", "bench/pod-42-0"}, `"stream":"node/node-042"`, false},
		{"container", []string{"--container", benchContainer}, `"stream":"node/node-042"`, false},
		{"pod-scan", []string{"--pod", "bench/pod-42-0"}, `"stream":"node/node-042"`, true},
	})
}

// benchContainer is the 12-character prefix of node 42's pod 0's container ID
// (sha256("node-042/0")).
var benchContainer = func() string {
	sum := sha256.Sum256([]byte("node-042/0"))
	return hex.EncodeToString(sum[:])[:12]
}()
