package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/demo"
)

// binDir holds coil, coild and coilctl built from this tree by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithDir(m, "coil-e2e-bin-", func(dir string) error {
		binDir = dir
		return demo.BuildBinaries(context.Background(), dir)
	}))
}

// pool is the pool every test creates (as "default").
const poolSubnet = "10.100.0.0/16"

// startCluster starts an IPv4-only cluster for the test, creates pool "default"
// (poolSubnet) with blocks of 2^bits addresses, and tears everything down when the test
// ends (also on Ctrl-C). On failure it logs the tails of every coild and BIRD log first.
func startCluster(t *testing.T, cfg demo.Config, bits int) *demo.Cluster {
	t.Helper()
	cfg.DisableIPv6 = true
	return startClusterWithPool(t, cfg, poolSubnet, bits)
}

// startClusterWithPool is startCluster with pool "default" on subnets (coilctl pool
// create's SUBNET, e.g. a dual-stack pair "V4,V6"), and cfg.DisableIPv6 as given.
func startClusterWithPool(t *testing.T, cfg demo.Config, subnets string, bits int) *demo.Cluster {
	t.Helper()
	testutil.RequireRoot(t)
	for _, c := range []string{"ip", "bird", "birdc", "cnitool", "ping", "unshare"} {
		testutil.RequireCommand(t, c)
	}
	cfg.BinDir = binDir
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := demo.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start cluster: %+v", err)
	}
	stop := c.Lab.CloseOnSignal()
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %+v", err)
		}
		stop()
	})
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range c.Nodes {
			t.Logf("---- %s coild log (tail) %s\n%s", n.Name, n.CoildLog(), lab.Tail(n.CoildLog(), 30))
			if n.Bird != nil {
				t.Logf("---- %s bird log (tail)\n%s", n.Name, lab.Tail(n.Dir+"/bird.log", 15))
			}
		}
	})
	if err := c.CreatePool(ctx, "default", subnets, bits); err != nil {
		t.Fatalf("create pool: %+v", err)
	}
	return c
}

func addPods(t *testing.T, n *demo.Node, count int, prefix string) []*demo.Pod {
	t.Helper()
	var pods []*demo.Pod
	for i := range count {
		p, err := n.AddPod(context.Background(), fmt.Sprintf("%s%d", prefix, i))
		if err != nil {
			t.Fatalf("%+v", err)
		}
		pods = append(pods, p)
	}
	return pods
}

func bgpPrefixes(t *testing.T, n *demo.Node) []netip.Prefix {
	t.Helper()
	rs, err := n.BGPRoutes(context.Background())
	if err != nil {
		t.Fatalf("%+v", err)
	}
	ps := make([]netip.Prefix, 0, len(rs))
	for _, r := range rs {
		ps = append(ps, r.Dst)
	}
	return ps
}

func exported(t *testing.T, n *demo.Node) []netip.Prefix {
	t.Helper()
	ps, err := n.ExportedBlocks(context.Background())
	if err != nil {
		t.Fatalf("%+v", err)
	}
	return ps
}

func sortPrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, lab.ComparePrefix)
	return ps
}

// waitExported waits until node n exports exactly count blocks (coild exports a new block
// asynchronously, possibly just after the ADD that took it returned) and returns them.
func waitExported(t *testing.T, n *demo.Node, count int) []netip.Prefix {
	t.Helper()
	var last []netip.Prefix
	testutil.Eventually(t, 10*time.Second, func() bool {
		last = exported(t, n)
		return len(last) == count
	}, "%s exports %d blocks (exports %v)", n.Name, count, &last)
	return last
}

// waitConverged waits until every node exports the blocks the log says it owns and has
// learnt exactly the blocks the other nodes own.
func waitConverged(t *testing.T, c *demo.Cluster) {
	t.Helper()
	var last string
	testutil.Eventually(t, 20*time.Second, func() bool {
		ok, diff, err := c.Converged(context.Background())
		if err != nil {
			t.Fatalf("%+v", err)
		}
		last = diff
		return ok
	}, "routes converge: %s", &last)
}

func ping(t *testing.T, from *demo.Pod, to netip.Addr) {
	t.Helper()
	if out, err := from.Ping(context.Background(), to, 1); err != nil {
		t.Errorf("%s/%s (%s) cannot reach %s: %v\n%s", from.Node.Name, from.Name, from.Addr, to, err, out)
	}
}

// TestPodsReachEachOtherAcrossNodes: every pod reaches every pod on the other nodes.
func TestPodsReachEachOtherAcrossNodes(t *testing.T) {
	c := startCluster(t, demo.Config{Nodes: 3}, 5)
	var pods []*demo.Pod
	for _, n := range c.Nodes {
		pods = append(pods, addPods(t, n, 2, "p")...)
		waitExported(t, n, 1)
	}
	waitConverged(t, c)
	pairs := 0
	for _, a := range pods {
		for _, b := range pods {
			if a.Node != b.Node {
				ping(t, a, b.Addr)
				pairs++
			}
		}
	}
	if pairs != 24 {
		t.Fatalf("pinged %d pairs, want 24", pairs)
	}
}

// TestRoutesEqualBlocksOwnedElsewhere: each node's BGP routes are exactly the blocks the
// other nodes own according to the event log, each via its owner's fabric address, and
// each node exports exactly its own blocks.
func TestRoutesEqualBlocksOwnedElsewhere(t *testing.T) {
	// Blocks of 4 addresses: 6 pods on n0 take 2 blocks, 3 on n1 one, n2 none.
	c := startCluster(t, demo.Config{Nodes: 3}, 2)
	addPods(t, c.Nodes[0], 6, "a")
	addPods(t, c.Nodes[1], 3, "b")
	ctx := context.Background()
	fromLog, err := c.BlocksFromLog(ctx)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if len(fromLog["n0"]) != 2 || len(fromLog["n1"]) != 1 || len(fromLog["n2"]) != 0 {
		t.Fatalf("blocks in the log: %v; want 2 on n0, 1 on n1, none on n2", fromLog)
	}
	owner := map[netip.Prefix]*demo.Node{}
	for _, n := range c.Nodes {
		if got := waitExported(t, n, len(fromLog[n.Name])); !slices.Equal(got, fromLog[n.Name]) {
			t.Errorf("%s exports %v, the log says it owns %v", n.Name, got, fromLog[n.Name])
		}
		for _, p := range fromLog[n.Name] {
			owner[p] = n
		}
	}
	var last string
	testutil.Eventually(t, 20*time.Second, func() bool {
		for _, n := range c.Nodes {
			var want []netip.Prefix
			for _, m := range c.Nodes {
				if m != n {
					want = append(want, fromLog[m.Name]...)
				}
			}
			want = sortPrefixes(want)
			if got := bgpPrefixes(t, n); !slices.Equal(got, want) {
				last = fmt.Sprintf("%s learnt %v, want %v", n.Name, got, want)
				return false
			}
		}
		return true
	}, "routes equal the blocks owned elsewhere: %s", &last)
	for _, n := range c.Nodes {
		rs, err := n.BGPRoutes(ctx)
		if err != nil {
			t.Fatalf("%+v", err)
		}
		for _, r := range rs {
			if o := owner[r.Dst]; o == nil || r.Gateway != o.FabricAddr {
				t.Errorf("%s: route %s via %s, want via its owner's address", n.Name, r.Dst, r.Gateway)
			}
		}
	}
}

// TestBlockAppearsAndIsWithdrawn: a block a node takes appears at its peer; when its last
// pod is gone and the grace period has passed, the block is released and its route
// disappears at the peer.
func TestBlockAppearsAndIsWithdrawn(t *testing.T) {
	c := startCluster(t, demo.Config{Nodes: 2, BlockGrace: time.Second, ReconcileInterval: 200 * time.Millisecond}, 5)
	n0, n1 := c.Nodes[0], c.Nodes[1]
	ctx := context.Background()
	if got := bgpPrefixes(t, n1); len(got) != 0 {
		t.Fatalf("n1 has BGP routes before any pod: %v", got)
	}
	pods := addPods(t, n0, 2, "p")
	blocks := waitExported(t, n0, 1)
	if len(blocks) != 1 || !blocks[0].Contains(pods[0].Addr) || !blocks[0].Contains(pods[1].Addr) {
		t.Fatalf("n0 exports %v for pods %s, %s; want the one block holding both", blocks, pods[0].Addr, pods[1].Addr)
	}
	block := blocks[0]
	testutil.Eventually(t, 10*time.Second, func() bool {
		return slices.Equal(bgpPrefixes(t, n1), []netip.Prefix{block})
	}, "n1 learns n0's new block %s", block)

	for _, p := range pods {
		if err := n0.DelPod(ctx, p.Name); err != nil {
			t.Fatalf("%+v", err)
		}
	}
	var last []netip.Prefix
	testutil.Eventually(t, 20*time.Second, func() bool {
		last = bgpPrefixes(t, n1)
		return len(last) == 0
	}, "n1 drops the released block %s (routes: %v)", block, &last)
	waitExported(t, n0, 0)
	out, err := c.Coilctl(ctx, "events", "--pool", "default", "--type", "BlockReleased", "-o", "json") // pool or block streams
	if err != nil {
		t.Fatalf("%+v", err)
	}
	if !strings.Contains(string(out), `"node":"n0"`) {
		t.Errorf("no BlockReleased by n0 in the log: %s", out)
	}

	// A new pod takes a block again, and the peer learns it.
	p := addPods(t, n0, 1, "q")[0]
	testutil.Eventually(t, 10*time.Second, func() bool {
		ps := bgpPrefixes(t, n1)
		return len(ps) == 1 && ps[0].Contains(p.Addr)
	}, "n1 learns the block of %s", p.Addr)
}

// TestNodeLossWithdrawsRoutes: when a node dies (coild and BIRD killed, namespace gone),
// its blocks disappear from its peers' tables once the BGP hold time passes, and the
// remaining nodes still reach each other.
func TestNodeLossWithdrawsRoutes(t *testing.T) {
	c := startCluster(t, demo.Config{Nodes: 3}, 5)
	var pods []*demo.Pod
	for _, n := range c.Nodes {
		pods = append(pods, addPods(t, n, 1, "p")...)
		waitExported(t, n, 1)
	}
	waitConverged(t, c)
	lost := c.Nodes[2]
	lostBlocks := exported(t, lost)
	if err := lost.Crash(context.Background()); err != nil {
		t.Fatalf("remove n2: %+v", err)
	}
	for _, n := range c.Nodes[:2] {
		var last []netip.Prefix
		testutil.Eventually(t, 20*time.Second, func() bool {
			last = bgpPrefixes(t, n)
			return !slices.Contains(last, lostBlocks[0])
		}, "%s withdraws n2's block %s (routes: %v)", n.Name, lostBlocks[0], &last)
		if want := othersExportedExcept(t, c, n, lost); !slices.Equal(last, want) {
			t.Errorf("%s: routes %v, want %v", n.Name, last, want)
		}
	}
	ping(t, pods[0], pods[1].Addr)
	ping(t, pods[1], pods[0].Addr)
}

func othersExportedExcept(t *testing.T, c *demo.Cluster, n, gone *demo.Node) []netip.Prefix {
	t.Helper()
	var ps []netip.Prefix
	for _, m := range c.Nodes {
		if m != n && m != gone {
			ps = append(ps, exported(t, m)...)
		}
	}
	return sortPrefixes(ps)
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// TestCoildRestartKeepsPodTraffic: restarting coild on a node does not interrupt
// established pod traffic: a ping stream (every 50 ms) from a pod on n0 to a pod on n1
// loses at most one packet while n1's coild is stopped and started again.
func TestCoildRestartKeepsPodTraffic(t *testing.T) {
	c := startCluster(t, demo.Config{Nodes: 2}, 5)
	n0, n1 := c.Nodes[0], c.Nodes[1]
	src := addPods(t, n0, 1, "src")[0]
	dst := addPods(t, n1, 1, "dst")[0]
	waitExported(t, n0, 1)
	waitExported(t, n1, 1)
	waitConverged(t, c)
	ping(t, src, dst.Addr)

	const count = 120 // 6 s at one every 50 ms
	cmd := exec.Command("ip", "netns", "exec", src.NetNS, "ping", "-n", "-i", "0.05", "-W", "1",
		"-c", strconv.Itoa(count), dst.Addr.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var (
		mu     sync.Mutex
		output strings.Builder
		lines  int
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			output.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "bytes from") {
				lines++
			}
			mu.Unlock()
		}
	}()
	// Restart once the stream is flowing.
	testutil.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return lines >= 5
	}, "ping stream starts")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n1.RestartCoild(ctx); err != nil {
		t.Fatalf("restart coild on n1: %+v", err)
	}
	select {
	case <-done:
		t.Fatalf("the ping stream ended before coild was back; cannot judge the restart:\n%s", output.String())
	default:
	}
	<-done
	werr := cmd.Wait()
	mu.Lock()
	out := output.String()
	mu.Unlock()
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ping summary (%v):\n%s", werr, out)
	}
	sent, _ := strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	t.Logf("ping across the restart: %d sent, %d received", sent, recv)
	if sent-recv > 1 {
		t.Errorf("%d of %d packets lost across the coild restart (at most 1 allowed):\n%s", sent-recv, sent, out)
	}
	// The restarted coild still owns its block, exports it, and serves new pods.
	waitConverged(t, c)
	p := addPods(t, n1, 1, "after")[0]
	ping(t, src, p.Addr)
}
