package exporter_test

import (
	"context"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/exporter"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/netplumb"
)

func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := runIP(append([]string{"-n", ns}, args...)...)
	if err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
	// iproute2 ends route lines with a space; compare trimmed lines.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "\n") + "\n"
}

// nodePlumber is a Plumber for a fresh node namespace (root only), closed at the end.
func nodePlumber(t *testing.T) (node string, p *netplumb.Plumber) {
	t.Helper()
	testutil.RequireRoot(t)
	node, nodePath := testutil.NetNS(t, "node")
	p, err := netplumb.New(netplumb.Config{HostNetNS: nodePath})
	if err != nil {
		t.Fatalf("netplumb.New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return node, p
}

func TestSyncKernel(t *testing.T) {
	node, p := nodePlumber(t)
	var _ exporter.Routes = p
	e := exporter.New(p, exporter.Config{})
	ctx := context.Background()

	// Foreign routes in table 119 (another protocol) and Coil's protocol in another table.
	ipIn(t, node, "route", "add", "blackhole", "10.9.0.0/27", "table", "119", "proto", "31")
	ipIn(t, node, "-6", "route", "add", "blackhole", "fd00:9::/120", "table", "119", "proto", "static")
	ipIn(t, node, "route", "add", "blackhole", "10.8.0.0/27", "table", "120", "proto", "30")
	// A stale Coil block.
	ipIn(t, node, "route", "add", "blackhole", "10.7.0.0/27", "table", "119", "proto", "30")

	added, removed, err := syncTo(ctx, e, pfx("10.1.0.0/27", "10.1.0.32/27", "fd00:1::/120"))
	if err != nil || added != 3 || removed != 1 {
		t.Fatalf("Sync = %d, %d, %v", added, removed, err)
	}
	want4 := "blackhole 10.1.0.0/27 proto 30\nblackhole 10.1.0.32/27 proto 30\nblackhole 10.9.0.0/27 proto 31\n"
	if got := ipIn(t, node, "-4", "route", "show", "table", "119"); got != want4 {
		t.Fatalf("table 119 =\n%s\nwant\n%s", got, want4)
	}
	if got := ipIn(t, node, "-6", "route", "show", "table", "119"); !strings.Contains(got, "blackhole fd00:1::/120 dev lo proto 30") || !strings.Contains(got, "fd00:9::/120") {
		t.Fatalf("table 119 (v6) = %q", got)
	}
	// Idempotent.
	if added, removed, err = syncTo(ctx, e, pfx("fd00:1::/120", "10.1.0.32/27", "10.1.0.0/27")); err != nil || added != 0 || removed != 0 {
		t.Fatalf("second Sync = %d, %d, %v", added, removed, err)
	}
	// A block whose prefix is held by a foreign route: conflict reported, route untouched,
	// the rest applied.
	added, removed, err = syncTo(ctx, e, pfx("10.9.0.0/27", "10.1.0.0/27"))
	if !errors.Is(err, netplumb.ErrRouteConflict) || added != 0 || removed != 2 {
		t.Fatalf("conflicting Sync = %d, %d, %v", added, removed, err)
	}
	if got := ipIn(t, node, "route", "show", "table", "119", "10.9.0.0/27"); !strings.Contains(got, "proto 31") {
		t.Fatalf("foreign route changed: %q", got)
	}
	// Empty set: only Coil's routes go.
	if added, removed, err = syncTo(ctx, e, nil); err != nil || added != 0 || removed != 1 {
		t.Fatalf("Sync(nil) = %d, %d, %v", added, removed, err)
	}
	if got := ipIn(t, node, "-4", "route", "show", "table", "119"); got != "blackhole 10.9.0.0/27 proto 31\n" {
		t.Fatalf("table 119 after Sync(nil) = %q", got)
	}
	if got := ipIn(t, node, "-6", "route", "show", "table", "119"); strings.Contains(got, "proto 30") || !strings.Contains(got, "fd00:9::/120") {
		t.Fatalf("table 119 (v6) after Sync(nil) = %q", got)
	}
	if got := ipIn(t, node, "route", "show", "table", "120"); !strings.Contains(got, "10.8.0.0/27") {
		t.Fatalf("table 120 touched: %q", got)
	}
}

// TestSyncTouchesOnlyCoilRoutes: the exporter owns only blackhole routes of its protocol
// in its own table. Given one of the kernel's tables (main, as `--export-table 254`
// did), it refuses and the node's routes stay; in its table, a route of Coil's protocol
// that is not a blackhole (an operator's) is neither deleted nor replaced.
func TestSyncTouchesOnlyCoilRoutes(t *testing.T) {
	node, p := nodePlumber(t)
	ctx := context.Background()
	ipIn(t, node, "link", "set", "lo", "up")
	// The operator's routes, with protocol 30 like Coil's, in the main table.
	ipIn(t, node, "route", "add", "10.5.0.0/24", "dev", "lo", "proto", "30")
	ipIn(t, node, "route", "add", "blackhole", "10.5.1.0/24", "proto", "30")
	mainBefore := ipIn(t, node, "route", "show", "table", "main")
	for _, table := range []int{254, 255, 253} {
		_, _, err := syncTo(ctx, exporter.New(p, exporter.Config{Table: table}), pfx("10.1.0.0/27"))
		if !errors.Is(err, netplumb.ErrInvalidArgument) || !strings.Contains(err.Error(), "kernel's own") {
			t.Errorf("Sync into table %d = %v, want ErrInvalidArgument (the kernel's own table)", table, err)
		}
	}
	if got := ipIn(t, node, "route", "show", "table", "main"); got != mainBefore {
		t.Fatalf("main table changed:\n%s\nwas\n%s", got, mainBefore)
	}

	// In the export table: an operator's unicast and unreachable routes of protocol 30.
	ipIn(t, node, "route", "add", "10.6.0.0/27", "dev", "lo", "table", "119", "proto", "30")
	ipIn(t, node, "route", "add", "unreachable", "10.1.0.0/27", "table", "119", "proto", "30")
	e := exporter.New(p, exporter.Config{})
	added, removed, err := syncTo(ctx, e, pfx("10.1.0.0/27", "10.1.0.32/27"))
	if !errors.Is(err, netplumb.ErrRouteConflict) || added != 1 || removed != 0 {
		t.Fatalf("Sync = %d, %d, %v; want 1 added, 0 removed, a conflict at 10.1.0.0/27", added, removed, err)
	}
	if _, removed, err = syncTo(ctx, e, nil); removed != 1 || err != nil {
		t.Fatalf("Sync(nil) removed %d, %v; want 1 (the blackhole coil wrote)", removed, err)
	}
	want := "unreachable 10.1.0.0/27 proto 30\n10.6.0.0/27 dev lo proto 30 scope link\n"
	if got := ipIn(t, node, "-4", "route", "show", "table", "119"); got != want {
		t.Fatalf("table 119 =\n%s\nwant\n%s", got, want)
	}
}
