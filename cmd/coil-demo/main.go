// Command coil-demo is `make demo`: a 2-node BGP lab with the embedded etcd, a pool, pods on
// every node added through cnitool and the coil plugin, pod-to-pod pings across nodes, the
// routes each node learnt (one per block, not per pod) and the tail of the event log; then
// it tears everything down. `coil-demo down` (`make demo-down`) removes what a crashed demo
// left. See docs/demo.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/demo"
)

// labName is the demo's lab name; `down` sweeps labs with this prefix.
const labName = "demo"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout))
}

func run(args []string, out io.Writer) int {
	if len(args) > 0 && args[0] == "kube" {
		return runKube(args[1:], out)
	}
	fs := flag.NewFlagSet("coil-demo", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "directory holding coil, coild and coilctl (make build)")
	nodes := fs.Int("nodes", 2, "number of nodes")
	pods := fs.Int("pods", 3, "pods per node")
	pool := fs.String("pool", "10.100.0.0/16", "subnet of the pool \"default\"")
	bits := fs.Int("block-size-bits", 5, "block size in bits (5: /27 blocks of 32 addresses)")
	events := fs.Int("events", 12, "how many of the last events to print")
	verbose := fs.Bool("v", false, "log the lab's progress to stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := lab.Signals(context.Background())
	defer stop()
	if fs.Arg(0) == "down" {
		removed, err := lab.Sweep(ctx, labName)
		for _, ns := range removed {
			fmt.Fprintf(out, "removed namespace %s\n", ns)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "coil-demo down: %+v\n", err)
			return 1
		}
		fmt.Fprintf(out, "demo-down: %d leftover namespaces removed\n", len(removed))
		return 0
	}
	d := &demoRun{out: out, start: time.Now()}
	binDir, err := filepath.Abs(*bin)
	if err == nil {
		err = d.run(ctx, demo.Config{Nodes: *nodes, Name: labName, BinDir: binDir, Logger: newLogger(*verbose)}, *pods, *pool, *bits, *events)
	}
	return d.exit(ctx, err, "lab")
}

type demoRun struct {
	out   io.Writer
	start time.Time
}

func (d *demoRun) step(format string, args ...any) {
	fmt.Fprintf(d.out, "\n[%5.2fs] == "+format+"\n", append([]any{time.Since(d.start).Seconds()}, args...)...)
}

func (d *demoRun) printf(format string, args ...any) { fmt.Fprintf(d.out, format, args...) }

// exit is a demo's exit code: 130 with a note when ctx was interrupted (what, the lab or
// the cluster, is torn down by then), 1 with err on stderr, 0 without err.
func (d *demoRun) exit(ctx context.Context, err error, what string) int {
	switch {
	case err == nil:
		return 0
	case ctx.Err() != nil:
		fmt.Fprintf(d.out, "\ninterrupted: %s torn down\n", what)
		return 130
	default:
		fmt.Fprintf(os.Stderr, "coil-demo: %+v\n", err)
		return 1
	}
}

// tearDown is a demo's last step: it says what it tears down, closes, and says how long
// the demo took; a failure to close joins *err.
func (d *demoRun) tearDown(what string, closeFn func() error, err *error) {
	d.step("tearing down: %s", what)
	if cerr := closeFn(); cerr != nil {
		*err = errors.CombineErrors(*err, cerr)
		return
	}
	d.printf("done in %.1fs\n", time.Since(d.start).Seconds())
}

// newLogger logs the lab's progress to stderr when verbose, nowhere otherwise.
func newLogger(verbose bool) *slog.Logger {
	if verbose {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// printRoutes prints the routes BIRD installed, one line each.
func (d *demoRun) printRoutes(rs []lab.Route) {
	for _, r := range rs {
		d.printf("      %s via %s dev %s proto bird\n", r.Dst, r.Gateway, r.Dev)
	}
}

func (d *demoRun) run(ctx context.Context, cfg demo.Config, podsPerNode int, subnet string, bits, nEvents int) (err error) {
	d.step("starting a %d-node lab: one network namespace per node on a bridge, BIRD 2 per node (iBGP full mesh), coild per node; node n0's coild serves the embedded etcd", cfg.Nodes)
	c, err := demo.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.tearDown("stopping coild and BIRD, deleting the namespaces", c.Close, &err)
	for _, n := range c.Nodes {
		sess, _ := n.BGPSessions(ctx)
		var up []string
		for _, s := range sess {
			up = append(up, s.Name+":"+s.Info)
		}
		d.printf("  %s  namespace %-16s fabric %-10s  BGP %s\n", n.Name, n.NetNS, n.FabricAddr, strings.Join(up, " "))
	}
	d.printf("  etcd: %s\n", c.EtcdURL)

	d.step("creating pool \"default\" %s with /%d blocks", subnet, 32-bits)
	cmd := []string{"pool", "create", "default", subnet, "--block-size-bits", fmt.Sprint(bits)}
	d.printf("  $ coilctl %s\n", strings.Join(cmd, " "))
	if _, err := c.Coilctl(ctx, cmd...); err != nil {
		return err
	}
	out, err := c.Coilctl(ctx, "pool", "list")
	if err != nil {
		return err
	}
	d.printf("%s", indent(out))

	d.step("adding %d pods per node with cnitool (CNI ADD -> coil plugin -> coild)", podsPerNode)
	for _, n := range c.Nodes {
		for i := range podsPerNode {
			name := fmt.Sprintf("pod%d", i)
			t0 := time.Now()
			p, err := n.AddPod(ctx, name)
			if err != nil {
				return err
			}
			d.printf("  %s/%s  %-15s (ADD %s)\n", n.Name, p.Name, p.Addr, time.Since(t0).Round(time.Millisecond))
		}
	}

	d.step("waiting until every node has learnt the other nodes' blocks over BGP")
	if err := c.WaitConverged(ctx, 15*time.Second); err != nil {
		return err
	}

	d.step("pinging every pod on every other node (ip netns exec POD ping -c1 ADDR)")
	var ok, total int
	for _, from := range allPods(c) {
		for _, to := range allPods(c) {
			if from.Node == to.Node {
				continue
			}
			total++
			res, err := from.Ping(ctx, to.Addr, 1)
			status := "ok   " + rtt(res)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				status = "FAIL"
			} else {
				ok++
			}
			d.printf("  %s/%s %-14s -> %s/%s %-14s %s\n", from.Node.Name, from.Name, from.Addr, to.Node.Name, to.Name, to.Addr, status)
		}
	}
	d.printf("  %d/%d cross-node pings answered\n", ok, total)

	d.step("routes each node learnt over BGP (main table, proto bird)")
	for _, n := range c.Nodes {
		rs, err := n.BGPRoutes(ctx)
		if err != nil {
			return err
		}
		peerPods, peerBlocks := 0, 0
		for _, m := range c.Nodes {
			if m != n {
				peerPods += len(m.Pods())
				b, err := m.ExportedBlocks(ctx)
				if err != nil {
					return err
				}
				peerBlocks += len(b)
			}
		}
		d.printf("  %s: %d route(s) for %d pod(s) on other nodes in %d block(s): one route per block, not per pod\n", n.Name, len(rs), peerPods, peerBlocks)
		d.printRoutes(rs)
		own, err := n.ExportedBlocks(ctx)
		if err != nil {
			return err
		}
		d.printf("    own blocks in export table 119 (announced by BIRD): %s\n", joinPrefixes(own))
	}

	d.step("the event log (last %d events: coilctl events)", nEvents)
	out, err = c.Coilctl(ctx, "events")
	if err != nil {
		return err
	}
	d.printf("%s", indent(lastLines(out, nEvents+1)))
	if ok != total {
		return errors.Newf("coil-demo: %d of %d cross-node pings failed", total-ok, total)
	}
	return nil
}

func allPods(c *demo.Cluster) []*demo.Pod {
	var ps []*demo.Pod
	for _, n := range c.Nodes {
		ps = append(ps, n.Pods()...)
	}
	return ps
}

func rtt(pingOut []byte) string {
	// "rtt min/avg/max/mdev = 0.052/0.052/0.052/0.000 ms"
	for _, l := range strings.Split(string(pingOut), "\n") {
		if _, v, ok := strings.Cut(l, " = "); ok && strings.HasPrefix(l, "rtt") {
			return strings.Split(v, "/")[1] + " ms"
		}
	}
	return ""
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

func indent(b []byte) string {
	var sb strings.Builder
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		sb.WriteString("  " + l + "\n")
	}
	return sb.String()
}

// lastLines keeps the header line and the last n-1 lines of a table.
func lastLines(b []byte, n int) []byte {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) <= n {
		return b
	}
	keep := append([]string{lines[0], "  ..."}, lines[len(lines)-(n-1):]...)
	return []byte(strings.Join(keep, "\n") + "\n")
}
