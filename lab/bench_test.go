package lab

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
)

// monitor follows `ip -n NS monitor route` and sends (line, arrival time) for every line.
type monitor struct {
	cmd   *exec.Cmd
	lines chan monLine
}

type monLine struct {
	text string
	at   time.Time
}

func startMonitor(b *testing.B, n *Node) *monitor {
	b.Helper()
	cmd := exec.Command("ip", "-n", n.NetNS, "monitor", "route")
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	m := &monitor{cmd: cmd, lines: make(chan monLine, 1024)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m.lines <- monLine{sc.Text(), time.Now()}
		}
		close(m.lines)
	}()
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// cmd.Start returns before ip has subscribed: add marker routes until one is seen.
	for i := 0; ; i++ {
		marker := fmt.Sprintf("10.99.%d.%d", i/256, i%256)
		if _, err := n.IP(context.Background(), "route", "add", "blackhole", marker+"/32", "table", "200"); err != nil {
			b.Fatalf("%+v", err)
		}
		if m.seen(marker, 100*time.Millisecond) {
			return m
		}
		if i > 100 {
			b.Fatal("ip monitor does not report routes")
		}
	}
}

// seen reports whether a line containing s arrives within d.
func (m *monitor) seen(s string, d time.Duration) bool {
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-m.lines:
			if ok && strings.Contains(l.text, s) {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// await returns the arrival time of the first line containing all of want.
func (m *monitor) await(b *testing.B, want ...string) time.Time {
	b.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-m.lines:
			if !ok {
				b.Fatal("ip monitor ended")
			}
			if testing.Verbose() {
				b.Logf("monitor: %s", l.text)
			}
			match := true
			for _, w := range want {
				match = match && strings.Contains(l.text, w)
			}
			if match {
				return l.at
			}
		case <-timeout:
			b.Fatalf("no route event with %q within 10s", want)
		}
	}
}

// BenchmarkBlockToPeer measures the time from a block route appearing in node 0's export
// table to its installation in node 1's main table, both seen as kernel notifications by
// `ip monitor` in each namespace. Run with -benchtime=20x for the median of 20.
func BenchmarkBlockToPeer(b *testing.B) {
	requireLabB(b)
	l, err := Start(context.Background(), Config{Dir: b.TempDir()})
	if err != nil {
		b.Fatalf("%+v", err)
	}
	b.Cleanup(func() { _ = l.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.WaitBGPEstablished(ctx); err != nil {
		b.Fatalf("%+v", err)
	}
	n0, n1 := l.Nodes[0], l.Nodes[1]
	m0, m1 := startMonitor(b, n0), startMonitor(b, n1)
	var prop, total []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst := fmt.Sprintf("10.%d.%d.0/27", 100+i/256, i%256)
		start := time.Now()
		if _, err := n0.IP(ctx, "route", "add", "blackhole", dst, "table", "119", "proto", "30"); err != nil {
			b.Fatalf("%+v", err)
		}
		t0 := m0.await(b, dst, "table 119")
		t1 := m1.await(b, dst, "via "+n0.FabricAddr.String())
		prop = append(prop, t1.Sub(t0))
		total = append(total, t1.Sub(start))
	}
	b.StopTimer()
	reportQuantiles(b, "prop", prop)
	reportQuantiles(b, "add-to-peer", total)
}

// BenchmarkStartToEstablished measures Start of a 2-node lab until every BGP session is
// Established (Close is not counted).
func BenchmarkStartToEstablished(b *testing.B) {
	requireLabB(b)
	var d []time.Duration
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		l, err := Start(ctx, Config{})
		if err != nil {
			cancel()
			b.Fatalf("%+v", err)
		}
		err = l.WaitBGPEstablished(ctx)
		d = append(d, time.Since(start))
		cancel()
		b.StopTimer()
		if cerr := l.Close(); cerr != nil {
			b.Fatalf("%+v", cerr)
		}
		b.StartTimer()
		if err != nil {
			b.Fatalf("%+v", err)
		}
	}
	reportQuantiles(b, "start", d)
}

func reportQuantiles(b *testing.B, name string, d []time.Duration) {
	b.Helper()
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	b.ReportMetric(ms(d[len(d)/2]), name+"-p50-ms")
	b.ReportMetric(ms(d[len(d)-1]), name+"-max-ms")
	b.ReportMetric(ms(d[0]), name+"-min-ms")
	b.ReportMetric(0, "ns/op")
}

func requireLabB(b *testing.B) {
	b.Helper()
	testutil.RequireRoot(b)
	testutil.RequireCommand(b, "bird")
	testutil.RequireCommand(b, "birdc")
}
