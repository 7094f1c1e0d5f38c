package netplumb_test

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/netplumb"
)

func TestRoutePrimitives(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const table, proto = 119, 30
	v4 := netip.MustParsePrefix("10.2.0.0/27")
	v6 := netip.MustParsePrefix("fd00:2::/120")
	for range 2 { // idempotent
		for _, p := range []netip.Prefix{v4, v6} {
			if err := e.p.AddBlackhole(ctx, table, proto, p); err != nil {
				t.Fatalf("AddBlackhole %s: %v", p, err)
			}
		}
	}
	if r := ipIn(t, e.node, "-4", "route", "show", "table", "119"); strings.TrimSpace(r) != "blackhole 10.2.0.0/27 proto 30" {
		t.Fatalf("table 119 = %q", r)
	}
	if r := ipIn(t, e.node, "-6", "route", "show", "table", "119"); !strings.HasPrefix(strings.TrimSpace(r), "blackhole fd00:2::/120 dev lo proto 30") {
		t.Fatalf("table 119 (v6) = %q", r)
	}
	// Foreign routes in the same table: another protocol, one with a Coil-like prefix.
	ipIn(t, e.node, "route", "add", "blackhole", "10.3.0.0/27", "table", "119", "proto", "31")
	ipIn(t, e.node, "-6", "route", "add", "blackhole", "fd00:3::/120", "table", "119", "proto", "static")
	// Coil's protocol in another table is not listed either.
	ipIn(t, e.node, "route", "add", "blackhole", "10.4.0.0/27", "table", "120", "proto", "30")

	got, err := e.p.ListRoutes(ctx, table, proto)
	if err != nil {
		t.Fatalf("ListRoutes: %v", err)
	}
	if !slices.Equal(got, []netip.Prefix{v4, v6}) {
		t.Fatalf("ListRoutes = %v", got)
	}
	foreign := netip.MustParsePrefix("10.3.0.0/27")
	if err := e.p.AddBlackhole(ctx, table, proto, foreign); !errors.Is(err, netplumb.ErrRouteConflict) {
		t.Fatalf("AddBlackhole over a foreign route = %v, want ErrRouteConflict", err)
	}
	if err := e.p.DelRoute(ctx, table, proto, foreign); err != nil {
		t.Fatalf("DelRoute of a foreign route: %v", err)
	}
	if r := ipIn(t, e.node, "route", "show", "table", "119", "10.3.0.0/27"); !strings.Contains(r, "proto 31") {
		t.Fatalf("foreign route touched: %q", r)
	}
	for range 2 {
		for _, p := range []netip.Prefix{v4, v6} {
			if err := e.p.DelRoute(ctx, table, proto, p); err != nil {
				t.Fatalf("DelRoute %s: %v", p, err)
			}
		}
	}
	if got, err := e.p.ListRoutes(ctx, table, proto); err != nil || len(got) != 0 {
		t.Fatalf("ListRoutes after DelRoute = %v, %v", got, err)
	}
	if r := ipIn(t, e.node, "-6", "route", "show", "table", "119"); !strings.Contains(r, "fd00:3::/120") {
		t.Fatalf("foreign IPv6 route gone: %q", r)
	}
	// A route of Coil's protocol but another type is not Coil's (Coil writes only
	// blackholes there): not listed, never replaced, never deleted.
	ipIn(t, e.node, "route", "add", "unreachable", "10.2.0.0/27", "table", "119", "proto", "30")
	ipIn(t, e.node, "-6", "route", "add", "fd00:5::/120", "dev", "lo", "table", "119", "proto", "30", "metric", "2000")
	ipIn(t, e.node, "-6", "route", "add", "blackhole", "fd00:5::/120", "table", "119", "proto", "30")
	if got, err := e.p.ListRoutes(ctx, table, proto); err != nil || !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("fd00:5::/120")}) {
		t.Fatalf("ListRoutes with non-blackhole routes of the protocol = %v, %v; want the blackhole only", got, err)
	}
	if err := e.p.AddBlackhole(ctx, table, proto, v4); !errors.Is(err, netplumb.ErrRouteConflict) {
		t.Fatalf("AddBlackhole over an unreachable route of the protocol = %v, want ErrRouteConflict", err)
	}
	if err := e.p.DelRoute(ctx, table, proto, v4); err != nil {
		t.Fatalf("DelRoute of an unreachable route: %v", err)
	}
	if r := ipIn(t, e.node, "route", "show", "table", "119", "10.2.0.0/27"); strings.TrimSpace(r) != "unreachable 10.2.0.0/27 proto 30" {
		t.Fatalf("unreachable route touched: %q", r)
	}
	if err := e.p.DelRoute(ctx, table, proto, netip.MustParsePrefix("fd00:5::/120")); err != nil {
		t.Fatalf("DelRoute fd00:5::/120: %v", err)
	}
	if r := ipIn(t, e.node, "-6", "route", "show", "table", "119", "fd00:5::/120"); strings.Contains(r, "blackhole") || !strings.Contains(r, "fd00:5::/120 dev lo proto 30 metric 2000") {
		t.Fatalf("after DelRoute of the blackhole, fd00:5::/120 = %q; want the unicast route only", r)
	}
	if err := e.p.AddBlackhole(ctx, table, proto, netip.MustParsePrefix("10.2.0.1/27")); !errors.Is(err, netplumb.ErrInvalidArgument) {
		t.Fatalf("unmasked prefix = %v, want ErrInvalidArgument", err)
	}
	// The kernel's own tables are refused by every primitive.
	for _, tb := range []int{0, 253, 254, 255} {
		if _, err := e.p.ListRoutes(ctx, tb, proto); !errors.Is(err, netplumb.ErrInvalidArgument) {
			t.Errorf("ListRoutes table %d = %v, want ErrInvalidArgument", tb, err)
		}
		if err := e.p.AddBlackhole(ctx, tb, proto, v4); !errors.Is(err, netplumb.ErrInvalidArgument) {
			t.Errorf("AddBlackhole table %d = %v, want ErrInvalidArgument", tb, err)
		}
		if err := e.p.DelRoute(ctx, tb, proto, v4); !errors.Is(err, netplumb.ErrInvalidArgument) {
			t.Errorf("DelRoute table %d = %v, want ErrInvalidArgument", tb, err)
		}
	}
}

// HostRoutes lists Coil's pod routes of the main table with their links, and nothing
// else: not another protocol's route, not a block route of table 119.
func TestHostRoutes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	setup(t, e, mustPod("hostroutes1", "eth0", e.podPath, "10.5.0.1", "fd00:5::1"))
	veth := netplumb.HostVethName("hostroutes1", "eth0")
	ipIn(t, e.node, "route", "add", "10.6.0.1/32", "dev", veth, "proto", "31")
	if err := e.p.AddBlackhole(ctx, 119, 30, netip.MustParsePrefix("10.5.0.0/28")); err != nil {
		t.Fatal(err)
	}
	got, err := e.p.HostRoutes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []netplumb.HostRoute{
		{Dst: netip.MustParsePrefix("10.5.0.1/32"), Link: veth},
		{Dst: netip.MustParsePrefix("fd00:5::1/128"), Link: veth},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("HostRoutes = %v, want %v", got, want)
	}
}
