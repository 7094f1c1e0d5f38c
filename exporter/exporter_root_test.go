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

func TestSyncKernel(t *testing.T) {
	testutil.RequireRoot(t)
	node, nodePath := testutil.NetNS(t, "node")
	p, err := netplumb.New(netplumb.Config{HostNetNS: nodePath})
	if err != nil {
		t.Fatalf("netplumb.New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	var _ exporter.Routes = p
	e := exporter.New(p, exporter.Config{})
	ctx := context.Background()

	// Foreign routes in table 119 (another protocol) and Coil's protocol in another table.
	ipIn(t, node, "route", "add", "blackhole", "10.9.0.0/27", "table", "119", "proto", "31")
	ipIn(t, node, "-6", "route", "add", "blackhole", "fd00:9::/120", "table", "119", "proto", "static")
	ipIn(t, node, "route", "add", "blackhole", "10.8.0.0/27", "table", "120", "proto", "30")
	// A stale Coil block.
	ipIn(t, node, "route", "add", "blackhole", "10.7.0.0/27", "table", "119", "proto", "30")

	added, removed, err := e.Sync(ctx, pfx("10.1.0.0/27", "10.1.0.32/27", "fd00:1::/120"))
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
	if added, removed, err = e.Sync(ctx, pfx("fd00:1::/120", "10.1.0.32/27", "10.1.0.0/27")); err != nil || added != 0 || removed != 0 {
		t.Fatalf("second Sync = %d, %d, %v", added, removed, err)
	}
	// A block whose prefix is held by a foreign route: conflict reported, route untouched,
	// the rest applied.
	added, removed, err = e.Sync(ctx, pfx("10.9.0.0/27", "10.1.0.0/27"))
	if !errors.Is(err, netplumb.ErrRouteConflict) || added != 0 || removed != 2 {
		t.Fatalf("conflicting Sync = %d, %d, %v", added, removed, err)
	}
	if got := ipIn(t, node, "route", "show", "table", "119", "10.9.0.0/27"); !strings.Contains(got, "proto 31") {
		t.Fatalf("foreign route changed: %q", got)
	}
	// Empty set: only Coil's routes go.
	if added, removed, err = e.Sync(ctx, nil); err != nil || added != 0 || removed != 1 {
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
