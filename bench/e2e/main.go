// Command e2e measures Coil's multi-node BGP figures on a lab (package lab/demo) and prints
// them as Markdown for docs/benchmarks.md ("Multi-node BGP figures"):
//
//  1. block to peer: the time from a block assignment to the block's route in a peer's main
//     table. Node n0 adds pods from a pool of one-address blocks, so every ADD takes a new
//     block. Timestamps: the BlockAssigned event as an etcd watch delivers it (its commit), the
//     ADD's return, the route appearing in n0's export table and in n1's main table (both seen
//     by `ip monitor route` in the node namespaces).
//  2. routes vs pods: 3 nodes x 100 pods with /27 blocks; routes announced and learnt vs pods.
//  3. bring-up: the time to add those 300 pods (ADDs concurrent per node, the 3 nodes in
//     parallel) until every node has learnt every other node's blocks and cross-node pings
//     from every pod succeed.
//
// Run as root from the repository root: `go run ./bench/e2e` (builds the binaries into a
// temporary directory unless -bin is given).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/bench/benchenv"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/demo"
)

func main() {
	samples := flag.Int("samples", 30, "block-to-peer samples")
	nodes := flag.Int("nodes", 3, "nodes for the scale run")
	pods := flag.Int("pods", 100, "pods per node for the scale run")
	par := flag.Int("parallel", 16, "concurrent ADDs per node")
	bin := flag.String("bin", "", "directory with coil, coild, coilctl (default: build them)")
	only := flag.String("only", "", "run only \"latency\" or \"scale\"")
	flag.Parse()
	ctx, stop := lab.Signals(context.Background())
	defer stop()
	if err := run(ctx, *bin, *samples, *nodes, *pods, *par, *only); err != nil {
		fmt.Fprintf(os.Stderr, "bench/e2e: %+v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin string, samples, nodes, pods, par int, only string) error {
	if bin == "" {
		dir, err := os.MkdirTemp("", "coil-bench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if err := demo.BuildBinaries(ctx, dir); err != nil {
			return err
		}
		bin = dir
	}
	fmt.Printf("Measured %s on %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	if only == "" || only == "latency" {
		if err := latency(ctx, bin, samples); err != nil {
			return errors.Wrap(err, "block-to-peer")
		}
	}
	if only == "" || only == "scale" {
		if err := scale(ctx, bin, nodes, pods, par); err != nil {
			return errors.Wrap(err, "scale")
		}
	}
	return nil
}

func machine() string {
	model := benchenv.CPUModel()
	if model == "" {
		model = "unknown CPU"
	}
	bird, _ := exec.Command("bird", "--version").CombinedOutput()
	return fmt.Sprintf("%d cores (%s), Linux %s, %s, %s", runtime.NumCPU(), model,
		benchenv.Kernel(), strings.TrimSpace(string(bird)), runtime.Version())
}

// monitor follows `ip -n NS monitor route` and records when each IPv4 prefix first appears.
type monitor struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	seen map[netip.Prefix]time.Time
	cond func(line string) bool
	note chan struct{}
}

func startMonitor(ns string, cond func(string) bool) (*monitor, error) {
	m := &monitor{seen: map[netip.Prefix]time.Time{}, cond: cond, note: make(chan struct{}, 1)}
	m.cmd = exec.Command("ip", "-n", ns, "-4", "monitor", "route")
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		return nil, errors.Wrap(err, "ip monitor")
	}
	if err := m.cmd.Start(); err != nil {
		return nil, errors.Wrap(err, "ip monitor")
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			now := time.Now()
			line := sc.Text()
			if strings.HasPrefix(line, "Deleted") || !m.cond(line) {
				continue
			}
			f := strings.Fields(line)
			if f[0] == "blackhole" && len(f) > 1 {
				f = f[1:]
			}
			p, err := netip.ParsePrefix(f[0])
			if err != nil {
				a, aerr := netip.ParseAddr(f[0])
				if aerr != nil {
					continue
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			m.mu.Lock()
			if _, ok := m.seen[p]; !ok {
				m.seen[p] = now
			}
			m.mu.Unlock()
			select {
			case m.note <- struct{}{}:
			default:
			}
		}
	}()
	return m, nil
}

func (m *monitor) stop() { _ = m.cmd.Process.Kill(); _ = m.cmd.Wait() }

func (m *monitor) wait(ctx context.Context, p netip.Prefix, within time.Duration) (time.Time, error) {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		m.mu.Lock()
		at, ok := m.seen[p]
		m.mu.Unlock()
		if ok {
			return at, nil
		}
		select {
		case <-m.note:
		case <-t.C:
			return time.Time{}, errors.Newf("route %s not seen within %s", p, within)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func latency(ctx context.Context, bin string, samples int) error {
	c, err := demo.Start(ctx, demo.Config{Nodes: 2, BinDir: bin, DisableIPv6: true})
	if err != nil {
		return err
	}
	defer c.Close()
	// One-address blocks: every ADD takes a new block.
	const subnet = "10.200.0.0/16"
	if err := c.CreatePool(ctx, "lat", subnet, 0); err != nil {
		return err
	}
	n0, n1 := c.Nodes[0], c.Nodes[1]
	exp, err := startMonitor(n0.NetNS, func(l string) bool { return strings.Contains(l, "table 119") })
	if err != nil {
		return err
	}
	defer exp.stop()
	peer, err := startMonitor(n1.NetNS, func(l string) bool { return strings.Contains(l, "proto bird") })
	if err != nil {
		return err
	}
	defer peer.stop()

	// BlockAssigned commits, as a watch on the pool's streams delivers them.
	head, rev, err := c.Log().Head(ctx, events.PoolStream("lat"))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The pool has block streams (coilctl's default): each BlockAssigned is in
	// block/lat/INDEX; a pool-stream pool would have them in pool/lat.
	ch := c.Log().Watch(wctx, events.WatchRequest{Prefixes: []string{string(events.PoolStream("lat")), "block/lat/"}, FromRev: rev,
		After: map[events.Stream]uint64{events.PoolStream("lat"): head.Seq}})
	var cmu sync.Mutex
	committed := map[uint64]time.Time{}
	go func() {
		for b := range ch {
			now := time.Now()
			if b.Err != nil {
				fmt.Fprintf(os.Stderr, "bench/e2e: watch: %v\n", b.Err)
			}
			cmu.Lock()
			for _, e := range b.Events {
				if ba, ok := e.Payload.(*events.BlockAssigned); ok {
					committed[ba.Index] = now
				}
			}
			cmu.Unlock()
		}
	}()
	base := netip.MustParsePrefix(subnet).Addr()

	var fromCommit, fromReturn, fromStart, exportToPeer, addDur []time.Duration
	for i := range samples {
		t0 := time.Now()
		p, err := n0.AddPodInPool(ctx, fmt.Sprintf("lat%d", i), "lat")
		if err != nil {
			return err
		}
		tRet := time.Now()
		block := netip.PrefixFrom(p.Addr, 32)
		tPeer, err := peer.wait(ctx, block, 10*time.Second)
		if err != nil {
			return err
		}
		tExp, err := exp.wait(ctx, block, time.Second)
		if err != nil {
			return err
		}
		idx := addrDiff(base, p.Addr)
		var tCommit time.Time
		for deadline := time.Now().Add(5 * time.Second); tCommit.IsZero() && time.Now().Before(deadline); {
			cmu.Lock()
			tCommit = committed[idx]
			cmu.Unlock()
			if tCommit.IsZero() {
				time.Sleep(time.Millisecond)
			}
		}
		if tCommit.IsZero() {
			return errors.Newf("no BlockAssigned seen for block %d", idx)
		}
		fromCommit = append(fromCommit, tPeer.Sub(tCommit))
		fromReturn = append(fromReturn, tPeer.Sub(tRet))
		fromStart = append(fromStart, tPeer.Sub(t0))
		exportToPeer = append(exportToPeer, tPeer.Sub(tExp))
		addDur = append(addDur, tRet.Sub(t0))
	}
	fmt.Printf("### Block assignment to route at the peer (%d samples, 2 nodes, one new block per ADD)\n\n", samples)
	fmt.Println("| interval | median | p90 | min / max |")
	fmt.Println("| --- | --- | --- | --- |")
	row := func(name string, d []time.Duration) {
		s := stats(d)
		fmt.Printf("| %s | %s | %s | %s / %s |\n", name, ms(s.med), ms(s.p90), ms(s.min), ms(s.max))
	}
	row("BlockAssigned committed (etcd watch delivery) -> route in n1's main table", fromCommit)
	row("route in n0's table 119 -> route in n1's main table (BIRD + BGP)", exportToPeer)
	row("ADD returned (cnitool exited) -> route in n1's main table", fromReturn)
	row("ADD started -> route in n1's main table", fromStart)
	row("ADD duration through cnitool (for reference)", addDur)
	fmt.Println()
	fmt.Println("Negative values: the route reached the peer before cnitool had exited.")
	fmt.Println()
	return nil
}

func addrDiff(base, a netip.Addr) uint64 {
	b4, a4 := base.As4(), a.As4()
	var x, y uint64
	for i := range 4 {
		x = x<<8 | uint64(b4[i])
		y = y<<8 | uint64(a4[i])
	}
	return y - x
}

func scale(ctx context.Context, bin string, nodes, pods, par int) error {
	c, err := demo.Start(ctx, demo.Config{Nodes: nodes, BinDir: bin, DisableIPv6: true})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.CreatePool(ctx, "default", "10.100.0.0/16", 5); err != nil {
		return err
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for _, n := range c.Nodes {
		sem := make(chan struct{}, par)
		for i := range pods {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := n.AddPod(ctx, fmt.Sprintf("p%d", i)); err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}()
		}
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return *e
	}
	tAdded := time.Since(t0)
	if err := c.WaitConverged(ctx, 30*time.Second); err != nil {
		return err
	}
	tRoutes := time.Since(t0)
	// Every pod pings one pod on every other node.
	var all [][]*demo.Pod
	for _, n := range c.Nodes {
		all = append(all, n.Pods())
	}
	var pings, failed atomic.Int64
	sem := make(chan struct{}, 2*par)
	for ni, ps := range all {
		for pi, p := range ps {
			for nj := range all {
				if nj == ni {
					continue
				}
				to := all[nj][(pi+7*nj)%len(all[nj])]
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					pings.Add(1)
					if _, err := p.Ping(ctx, to.Addr, 1); err != nil {
						failed.Add(1)
					}
				}()
			}
		}
	}
	wg.Wait()
	tVerified := time.Since(t0)

	total := 0
	var blocks, learnt []int
	announced := 0
	for _, n := range c.Nodes {
		total += len(n.Pods())
		b, err := n.ExportedBlocks(ctx)
		if err != nil {
			return err
		}
		blocks = append(blocks, len(b))
		announced += len(b)
		rs, err := n.BGPRoutes(ctx)
		if err != nil {
			return err
		}
		learnt = append(learnt, len(rs))
	}
	fmt.Printf("### %d nodes x %d pods, /27 blocks (ADDs %d at a time per node, nodes in parallel)\n\n", nodes, pods, par)
	fmt.Println("| what | value |")
	fmt.Println("| --- | --- |")
	fmt.Printf("| pods | %d |\n", total)
	fmt.Printf("| blocks owned per node (= routes each node announces) | %v |\n", blocks)
	fmt.Printf("| routes announced in total | %d (%.1fx fewer than pods) |\n", announced, float64(total)/float64(announced))
	fmt.Printf("| BGP routes learnt per node (main table) | %v |\n", learnt)
	fmt.Printf("| all ADDs returned | %.2f s |\n", tAdded.Seconds())
	fmt.Printf("| + every node learnt every other node's blocks | %.2f s |\n", tRoutes.Seconds())
	fmt.Printf("| + cross-node pings verified (%d pings, %d failed) | %.2f s |\n", pings.Load(), failed.Load(), tVerified.Seconds())
	fmt.Println()
	if failed.Load() > 0 {
		return errors.Newf("%d of %d cross-node pings failed", failed.Load(), pings.Load())
	}
	return nil
}

type summary struct{ min, med, p90, max time.Duration }

func stats(d []time.Duration) summary {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return summary{}
	}
	return summary{min: s[0], med: s[len(s)/2], p90: s[len(s)*9/10], max: s[len(s)-1]}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
