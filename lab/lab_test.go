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
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
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

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
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
	get := n.Routes
	if dst.Addr().Is6() {
		get = n.Routes6
	}
	rs, err := get(context.Background(), 254)
	if err != nil {
		t.Fatalf("routes: %+v", err)
	}
	return slices.ContainsFunc(rs, func(r Route) bool { return r.Dst == dst && r.Gateway == gw })
}

func hasRoute(t *testing.T, n *Node, dst netip.Prefix) bool {
	t.Helper()
	get := n.Routes
	if dst.Addr().Is6() {
		get = n.Routes6
	}
	rs, err := get(context.Background(), 254)
	if err != nil {
		t.Fatalf("routes: %+v", err)
	}
	return slices.ContainsFunc(rs, func(r Route) bool { return r.Dst == dst })
}

func TestTwoNodesAnnounceBlocks(t *testing.T) {
	requireLab(t)
	l := startLab(t, Config{})
	waitEstablished(t, l)
	n0, n1 := l.Nodes[0], l.Nodes[1]

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

var _ = fmt.Sprintf
var _ = errors.Is
