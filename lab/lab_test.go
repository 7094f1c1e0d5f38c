package lab

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/internal/testutil"
)

func requireLab(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "bird")
	testutil.RequireCommand(t, "birdc")
}

// startLab starts a lab that is closed (and checked gone) when the test ends.
func startLab(t *testing.T, cfg Config) *Lab {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t, slog.LevelDebug)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %+v", err)
	}
	stop := l.CloseOnSignal()
	t.Cleanup(func() {
		if t.Failed() {
			dumpBird(t, l)
		}
		if err := l.Close(); err != nil {
			t.Errorf("Close: %+v", err)
		}
		stop()
		assertNoNamespaces(t, l.Name)
	})
	return l
}

func dumpBird(t *testing.T, l *Lab) {
	t.Helper()
	for _, n := range l.Nodes {
		out, _ := n.Birdc(context.Background(), "show", "protocols", "all")
		t.Logf("%s: birdc show protocols all:\n%s", n.Name, out)
		out, _ = n.Birdc(context.Background(), "show", "route", "all")
		t.Logf("%s: birdc show route all:\n%s", n.Name, out)
		if n.Bird != nil {
			b, _ := os.ReadFile(n.Bird.LogPath)
			t.Logf("%s: bird output:\n%s", n.Name, b)
		}
		b, _ := os.ReadFile(n.Dir + "/bird.log")
		t.Logf("%s: bird.log:\n%s", n.Name, b)
	}
}

func assertNoNamespaces(t *testing.T, name string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, Prefix+name+"-") {
			t.Errorf("namespace left behind: %s", line)
		}
	}
	if _, err := os.Stat(OwnerDir + "/" + name); !os.IsNotExist(err) {
		t.Errorf("owner record left behind: %v", err)
	}
}

func waitEstablished(t *testing.T, l *Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.WaitBGPEstablished(ctx); err != nil {
		t.Fatalf("WaitBGPEstablished: %+v", err)
	}
}

func mustIP(t *testing.T, n *Node, args ...string) {
	t.Helper()
	if _, err := n.IP(context.Background(), args...); err != nil {
		t.Fatalf("%+v", err)
	}
}

// routeVia reports whether n's main table holds dst via gw.
func routeVia(t *testing.T, n *Node, dst netip.Prefix, gw netip.Addr) bool {
	t.Helper()
	return slices.ContainsFunc(mainRoutes(t, n, dst), func(r Route) bool { return r.Dst == dst && r.Gateway == gw })
}

func hasRoute(t *testing.T, n *Node, dst netip.Prefix) bool {
	t.Helper()
	return slices.ContainsFunc(mainRoutes(t, n, dst), func(r Route) bool { return r.Dst == dst })
}

// mainRoutes lists n's main table of dst's family.
func mainRoutes(t *testing.T, n *Node, dst netip.Prefix) []Route {
	t.Helper()
	get := n.Routes
	if dst.Addr().Is6() {
		get = n.Routes6
	}
	rs, err := get(context.Background(), 254)
	if err != nil {
		t.Fatalf("routes: %+v", err)
	}
	return rs
}

func TestTwoNodesAnnounceBlocks(t *testing.T) {
	requireLab(t)
	l := startLab(t, Config{})
	waitEstablished(t, l)
	n0, n1 := l.Nodes[0], l.Nodes[1]

	// Table 119 does not exist yet (the kernel makes a table with its first route): empty.
	for _, routes := range []func(context.Context, int) ([]Route, error){n0.Routes, n0.Routes6} {
		if rs, err := routes(context.Background(), 119); err != nil || len(rs) != 0 {
			t.Fatalf("routes of the empty table 119: %v, %v; want none, no error", rs, err)
		}
	}

	block := netip.MustParsePrefix("10.100.0.0/27")
	other := netip.MustParsePrefix("10.100.0.32/27")
	// other (protocol static) goes in first: once block (added after it) has reached n1,
	// BIRD has seen other too, so its absence at n1 is meaningful.
	mustIP(t, n0, "route", "add", "blackhole", other.String(), "table", "119", "proto", "static")
	mustIP(t, n0, "route", "add", "blackhole", block.String(), "table", "119", "proto", "30")
	testutil.Eventually(t, 10*time.Second, func() bool { return routeVia(t, n1, block, n0.FabricAddr) },
		"%s via %s in %s's main table", block, n0.FabricAddr, n1.Name)

	// A route of another protocol in the export table is never announced.
	if hasRoute(t, n1, other) {
		t.Errorf("route with protocol static in table 119 was announced to %s", n1.Name)
	}
	// The node does not install its own blocks in its main table.
	if hasRoute(t, n0, block) {
		t.Errorf("%s installed its own block in its main table", n0.Name)
	}

	mustIP(t, n0, "route", "del", "blackhole", block.String(), "table", "119", "proto", "30")
	testutil.Eventually(t, 10*time.Second, func() bool { return !hasRoute(t, n1, block) },
		"%s withdrawn from %s", block, n1.Name)

	if !l.Fabric.Prefix6.IsValid() {
		return
	}
	block6 := netip.MustParsePrefix("fd00:100::/120")
	mustIP(t, n1, "-6", "route", "add", "blackhole", block6.String(), "table", "119", "proto", "30")
	testutil.Eventually(t, 10*time.Second, func() bool { return routeVia(t, n0, block6, n1.FabricAddr6) },
		"%s via %s in %s's main table", block6, n1.FabricAddr6, n0.Name)
	mustIP(t, n1, "-6", "route", "del", "blackhole", block6.String(), "table", "119", "proto", "30")
	testutil.Eventually(t, 10*time.Second, func() bool { return !hasRoute(t, n0, block6) },
		"%s withdrawn from %s", block6, n0.Name)
}

func TestRouteReflector(t *testing.T) {
	requireLab(t)
	l := startLab(t, Config{Nodes: 3, RouteReflector: true})
	waitEstablished(t, l)
	for _, n := range l.Nodes[1:] {
		s, err := n.BGPSessions(context.Background())
		if err != nil {
			t.Fatalf("%+v", err)
		}
		if len(s) != 1 || s[0].Name != "n0" {
			t.Errorf("%s: sessions %v, want only n0 (the reflector)", n.Name, s)
		}
	}
	// A client's block reaches the other client through the reflector, with the
	// originator's next hop; the reflector's own block reaches both clients.
	n0, n1, n2 := l.Nodes[0], l.Nodes[1], l.Nodes[2]
	b1 := netip.MustParsePrefix("10.100.1.0/27")
	b0 := netip.MustParsePrefix("10.100.0.0/27")
	mustIP(t, n1, "route", "add", "blackhole", b1.String(), "table", "119", "proto", "30")
	mustIP(t, n0, "route", "add", "blackhole", b0.String(), "table", "119", "proto", "30")
	for _, c := range []struct {
		n   *Node
		dst netip.Prefix
		via *Node
	}{{n2, b1, n1}, {n0, b1, n1}, {n1, b0, n0}, {n2, b0, n0}} {
		testutil.Eventually(t, 10*time.Second, func() bool { return routeVia(t, c.n, c.dst, c.via.FabricAddr) },
			"%s via %s in %s's main table", c.dst, c.via.FabricAddr, c.n.Name)
	}
	if hasRoute(t, n1, b1) {
		t.Errorf("the reflector sent %s back to its originator %s", b1, n1.Name)
	}
	mustIP(t, n1, "route", "del", "blackhole", b1.String(), "table", "119", "proto", "30")
	testutil.Eventually(t, 10*time.Second, func() bool { return !hasRoute(t, n2, b1) },
		"%s withdrawn from %s", b1, n2.Name)
}

func TestFiveNodeMesh(t *testing.T) {
	requireLab(t)
	l := startLab(t, Config{Nodes: 5})
	waitEstablished(t, l)
	blocks := make([]netip.Prefix, len(l.Nodes))
	for i, n := range l.Nodes {
		blocks[i] = netip.MustParsePrefix(fmt.Sprintf("10.100.%d.0/27", i))
		mustIP(t, n, "route", "add", "blackhole", blocks[i].String(), "table", "119", "proto", "30")
	}
	for _, n := range l.Nodes {
		for j, peer := range l.Nodes {
			if peer == n {
				continue
			}
			testutil.Eventually(t, 10*time.Second, func() bool { return routeVia(t, n, blocks[j], peer.FabricAddr) },
				"%s via %s in %s's main table", blocks[j], peer.FabricAddr, n.Name)
		}
	}
}

// A failure in the middle of Start (here: the OnNode hook of the second node, after every
// namespace and BIRD exist) leaves nothing behind.
func TestStartFailureTearsDown(t *testing.T) {
	requireLab(t)
	hookErr := errors.New("hook failed on purpose")
	var seen *Lab
	var pids []int
	cfg := Config{Nodes: 3, Dir: t.TempDir(), OnNode: func(ctx context.Context, l *Lab, n *Node) error {
		seen = l
		p, err := n.StartProcess(ctx, "sleep", "1000")
		if err != nil {
			return err
		}
		pids = append(pids, p.PID(), n.Bird.PID())
		if n.Index == 1 {
			return hookErr
		}
		return nil
	}}
	l, err := Start(context.Background(), cfg)
	if !errors.Is(err, hookErr) {
		t.Fatalf("Start: got %v, %+v; want the hook's error", l, err)
	}
	if seen == nil || len(pids) != 4 {
		t.Fatalf("hook ran %d times", len(pids)/2)
	}
	assertNoNamespaces(t, seen.Name)
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("process %d still running after failed Start", pid)
		}
	}
	if err := seen.Close(); err != nil {
		t.Errorf("second Close: %+v", err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	requireLab(t)
	l, err := Start(context.Background(), Config{Nodes: 1, DisableIPv6: true})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	pod, err := l.AddPodNS(l.Nodes[0], "p1")
	if err != nil {
		t.Fatalf("%+v", err)
	}
	dir := l.Dir
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %+v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %+v", err)
	}
	assertNoNamespaces(t, l.Name)
	if _, err := os.Stat(pod); !os.IsNotExist(err) {
		t.Errorf("pod namespace %s left: %v", pod, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("work dir %s left: %v", dir, err)
	}
	if _, err := l.AddPodNS(l.Nodes[0], "p2"); !errors.Is(err, ErrClosed) {
		t.Errorf("AddPodNS after Close: %v, want ErrClosed", err)
	}
}

// fakeDeadOwner writes the owner record of lab name naming a process that has exited, as
// a crashed run leaves it: Sweep takes that lab for dead.
func fakeDeadOwner(t *testing.T, name string) {
	t.Helper()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(OwnerDir+"/"+name, fmt.Appendf(nil, "%d 1\n", dead.Process.Pid), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Sweep removes a crashed lab's namespaces (and processes in them) but never a live lab's.
func TestSweep(t *testing.T) {
	requireLab(t)
	live := startLab(t, Config{Nodes: 1, DisableIPv6: true})

	// Fake a crashed lab: an owner record naming a process that has exited, a namespace,
	// and a process left inside it.
	name := "sw" + live.Name[:6]
	fakeDeadOwner(t, name)
	ns := Prefix + name + "-n0"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	orphan := exec.Command("ip", "netns", "exec", ns, "sleep", "1000")
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = orphan.Wait(); close(exited) }()
	t.Cleanup(func() { _ = orphan.Process.Kill(); <-exited })

	workDir, err := os.MkdirTemp("", Prefix+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(workDir) })

	removed, err := Sweep(context.Background(), "sw")
	if err != nil {
		t.Fatalf("Sweep: %+v", err)
	}
	if !slices.Equal(removed, []string{ns}) {
		t.Errorf("Sweep removed %v, want [%s]", removed, ns)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return isDone(exited) }, "orphan process killed")
	assertNoNamespaces(t, name)
	if _, serr := os.Stat(workDir); !os.IsNotExist(serr) {
		t.Errorf("the dead lab's work dir %s is still there (stat: %v)", workDir, serr)
	}
	if _, serr := os.Stat(live.Dir); serr != nil {
		t.Errorf("the live lab's work dir: %v", serr)
	}
	// A crashed lab whose namespaces were already gone left only its work dir.
	onlyDir, err := os.MkdirTemp("", Prefix+"sx"+live.Name[:6]+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(onlyDir) })
	if _, err = Sweep(context.Background(), "sx"); err != nil {
		t.Fatalf("Sweep: %+v", err)
	}
	if _, serr := os.Stat(onlyDir); !os.IsNotExist(serr) {
		t.Errorf("the work dir %s of a lab without namespaces or owner is still there (stat: %v)", onlyDir, serr)
	}

	// The live lab is untouched even by a sweep of every lab.
	if _, err := Sweep(context.Background(), live.Name); err != nil {
		t.Fatalf("Sweep: %+v", err)
	}
	for _, n := range live.Namespaces() {
		if !nsExists(n) {
			t.Errorf("Sweep removed %s of a live lab", n)
		}
	}
}

func TestCNI(t *testing.T) {
	requireLab(t)
	testutil.RequireCommand(t, "cnitool")
	ptp := testutil.RequireCommand(t, "ptp")
	testutil.RequireCommand(t, "host-local")
	l := startLab(t, Config{Nodes: 1, DisableIPv6: true})
	n := l.Nodes[0]
	confDir := t.TempDir()
	conf := `{"cniVersion":"1.0.0","name":"labnet","type":"ptp","ipam":{"type":"host-local","subnet":"10.100.0.0/27"}}`
	if err := os.WriteFile(confDir+"/10-labnet.conf", []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	pod, err := l.AddPodNS(n, "pod1")
	if err != nil {
		t.Fatalf("%+v", err)
	}
	cniPath := ptp[:strings.LastIndex(ptp, "/")]
	ctx := context.Background()
	out, err := n.CNI(ctx, "add", confDir, cniPath, "labnet", pod)
	if err != nil {
		t.Fatalf("cnitool add: %+v", err)
	}
	if !strings.Contains(string(out), "10.100.0.") {
		t.Errorf("cnitool add result has no address from the subnet: %s", out)
	}
	// host-local's state is in the node's own /var/lib, not the machine's.
	if _, err := os.Stat(n.Dir + "/varlib/cni/networks/labnet"); err != nil {
		t.Errorf("host-local state not in the lab: %v", err)
	}
	if _, err := n.CNI(ctx, "del", confDir, cniPath, "labnet", pod); err != nil {
		t.Fatalf("cnitool del: %+v", err)
	}
	if err := l.RemovePodNS(n, "pod1"); err != nil {
		t.Fatalf("%+v", err)
	}
	if nsExists(Prefix + l.Name + "-n0-pod1") {
		t.Errorf("pod namespace still exists")
	}
}

func TestRenderBirdConfig(t *testing.T) {
	l := &Lab{Config: Config{ASN: 64512, ExportTable: 119, RouteProtocol: 30, RouteReflector: true},
		Fabric: Fabric{Prefix4: DefaultFabric4, Prefix6: DefaultFabric6}}
	for i := range 3 {
		l.Nodes = append(l.Nodes, &Node{Name: fmt.Sprintf("n%d", i), Index: i,
			FabricAddr: nthAddr(DefaultFabric4, i+1), Dir: "/x"})
	}
	rr, err := RenderBirdConfig(l.birdConfig(l.Nodes[0]))
	if err != nil {
		t.Fatal(err)
	}
	client, err := RenderBirdConfig(l.birdConfig(l.Nodes[2]))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"router id 10.255.0.1;", "rr client;", "neighbor 10.255.0.3 as 64512;",
		"kernel table 119;", "krt_source = 30", "table blocks6;"} {
		if !strings.Contains(string(rr), want) {
			t.Errorf("reflector config lacks %q:\n%s", want, rr)
		}
	}
	if strings.Contains(string(client), "rr client") || strings.Contains(string(client), "10.255.0.2 as") {
		t.Errorf("client config peers with another client or reflects:\n%s", client)
	}
	if got := nthAddr(netip.MustParsePrefix("fd00:255::/64"), 300); got.String() != "fd00:255::12c" {
		t.Errorf("nthAddr = %s", got)
	}
}

// The example configuration for real nodes and every rendered lab variant parse in BIRD.
func TestBirdConfigsParse(t *testing.T) {
	bird := testutil.RequireCommand(t, "bird")
	root := testutil.Root(t)
	files := []string{root + "/examples/bird/bird.conf"}
	for _, cfg := range []Config{{Nodes: 3}, {Nodes: 3, RouteReflector: true}, {Nodes: 2, DisableIPv6: true}} {
		if err := cfg.defaults(); err != nil {
			t.Fatal(err)
		}
		l := &Lab{Config: cfg, Fabric: Fabric{Prefix4: DefaultFabric4}}
		if !cfg.DisableIPv6 {
			l.Fabric.Prefix6 = DefaultFabric6
		}
		for i := range cfg.Nodes {
			l.Nodes = append(l.Nodes, &Node{Name: fmt.Sprintf("n%d", i), Index: i,
				FabricAddr: nthAddr(DefaultFabric4, i+1), Dir: t.TempDir()})
		}
		for _, n := range l.Nodes {
			b, err := RenderBirdConfig(l.birdConfig(n))
			if err != nil {
				t.Fatal(err)
			}
			f := fmt.Sprintf("%s/%s-rr%v-v6%v.conf", t.TempDir(), n.Name, cfg.RouteReflector, !cfg.DisableIPv6)
			if err := os.WriteFile(f, b, 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
	}
	for _, f := range files {
		if out, err := exec.Command(bird, "-p", "-c", f).CombinedOutput(); err != nil {
			b, _ := os.ReadFile(f)
			t.Errorf("bird -p -c %s: %v: %s\n%s", f, err, out, b)
		}
	}
}

func TestParseRoutes(t *testing.T) {
	out := `[{"type":"blackhole","dst":"10.100.0.0/27","protocol":"30","flags":[]},
{"dst":"default","gateway":"10.255.0.1","dev":"fab0","flags":[]},
{"dst":"10.1.2.3","dev":"veth1","protocol":"kernel","scope":"link","flags":[]}]`
	rs, err := parseRoutes([]byte(out), false)
	if err != nil {
		t.Fatal(err)
	}
	want := []Route{
		{Dst: netip.MustParsePrefix("10.100.0.0/27"), Type: "blackhole", Protocol: "30"},
		{Dst: netip.MustParsePrefix("0.0.0.0/0"), Type: "unicast", Gateway: netip.MustParseAddr("10.255.0.1"), Dev: "fab0"},
		{Dst: netip.MustParsePrefix("10.1.2.3/32"), Type: "unicast", Dev: "veth1", Protocol: "kernel"},
	}
	if !slices.Equal(rs, want) {
		t.Errorf("got %+v\nwant %+v", rs, want)
	}
	if rs, err := parseRoutes([]byte("\n"), false); err != nil || len(rs) != 0 {
		t.Errorf("empty table: %v, %v", rs, err)
	}
	if _, err := parseRoutes([]byte("not json"), false); err == nil {
		t.Error("garbage parsed")
	}
}
