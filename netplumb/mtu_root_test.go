package netplumb_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/netplumb"
)

// linkMTU reads the MTU of dev in ns with ip(8).
func linkMTU(t testing.TB, ns, dev string) int {
	t.Helper()
	l := ipJSON(t, ns, "link", "show", "dev", dev)
	if len(l) != 1 {
		t.Fatalf("ip link show dev %s in %s: %v", dev, ns, l)
	}
	mtu, _ := l[0]["mtu"].(float64)
	return int(mtu)
}

// TestSetupMTU: both ends of the pair get Pod.MTU; a repeated Setup with another MTU
// converges the existing pair; Check reports an end whose MTU was changed.
func TestSetupMTU(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pod := mustPod("c-mtu", "eth0", e.podPath, "10.1.0.20", "fd00::20")
	pod.MTU = 9000
	att := setup(t, e, pod)
	if att.MTU != 9000 || linkMTU(t, e.pod, "eth0") != 9000 || linkMTU(t, e.node, att.HostVeth) != 9000 {
		t.Fatalf("MTU: attachment %d, pod %d, host %d; want 9000", att.MTU, linkMTU(t, e.pod, "eth0"), linkMTU(t, e.node, att.HostVeth))
	}
	if err := e.p.Check(ctx, pod); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// Someone changes the pod's MTU: Check names the end, what it has and what it should.
	ipIn(t, e.pod, "link", "set", "dev", "eth0", "mtu", "1400")
	err := e.p.Check(ctx, pod)
	if !errors.Is(err, netplumb.ErrCheckFailed) || !errors.Is(err, netplumb.ErrMTUMismatch) || !strings.Contains(err.Error(), "eth0 has MTU 1400, want 9000") {
		t.Fatalf("Check after the pod's MTU changed = %v", err)
	}
	ipIn(t, e.node, "link", "set", "dev", att.HostVeth, "mtu", "1500")
	err = e.p.Check(ctx, pod)
	if !errors.Is(err, netplumb.ErrMTUMismatch) || !strings.Contains(err.Error(), att.HostVeth+" has MTU 1500, want 9000") {
		t.Fatalf("Check after the host veth's MTU changed = %v", err)
	}
	// Setup again (a repeated ADD) converges both ends, to another MTU too.
	pod.MTU = 1450
	att = setup(t, e, pod)
	if att.MTU != 1450 || linkMTU(t, e.pod, "eth0") != 1450 || linkMTU(t, e.node, att.HostVeth) != 1450 {
		t.Fatalf("after Setup with 1450: attachment %d, pod %d, host %d", att.MTU, linkMTU(t, e.pod, "eth0"), linkMTU(t, e.node, att.HostVeth))
	}
	if err := e.p.Check(ctx, pod); err != nil {
		t.Fatalf("Check: %v", err)
	}
	// An address problem alone is not an MTU mismatch.
	ipIn(t, e.pod, "addr", "del", "10.1.0.20/32", "dev", "eth0")
	if err := e.p.Check(ctx, pod); !errors.Is(err, netplumb.ErrCheckFailed) || errors.Is(err, netplumb.ErrMTUMismatch) {
		t.Fatalf("Check without the address = %v, want ErrCheckFailed only", err)
	}
	// Without an MTU (Pod.MTU and Config.MTU 0) a pair gets the kernel's 1500 and Check
	// does not look at it.
	plain := mustPod("c-mtu0", "eth1", e.podPath, "10.1.0.21")
	att = setup(t, e, plain)
	if att.MTU != 1500 || linkMTU(t, e.pod, "eth1") != 1500 {
		t.Fatalf("default MTU: attachment %d, pod %d", att.MTU, linkMTU(t, e.pod, "eth1"))
	}
	ipIn(t, e.pod, "link", "set", "dev", "eth1", "mtu", "1400")
	if err := e.p.Check(ctx, plain); err != nil {
		t.Fatalf("Check with no MTU asked: %v", err)
	}
	for _, bad := range []int{-1, 65536} {
		p := mustPod("c-mtubad", "eth2", e.podPath, "10.1.0.22")
		p.MTU = bad
		if _, err := e.p.Setup(ctx, p); !errors.Is(err, netplumb.ErrInvalidArgument) {
			t.Errorf("Setup with MTU %d = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if linkExists(t, e.pod, "eth2") {
		t.Error("a refused Setup left eth2")
	}
}

// TestUplinkMTU: the MTU of the interface of the host namespace's default route, the
// smallest of IPv4's and IPv6's, the route's own mtu attribute, the lowest metric.
func TestUplinkMTU(t *testing.T) {
	e := newEnv(t)
	if _, err := e.p.UplinkMTU(); !errors.Is(err, netplumb.ErrNoDefaultRoute) {
		t.Fatalf("UplinkMTU with no default route = %v, want ErrNoDefaultRoute", err)
	}
	// An uplink: a veth pair inside the node namespace (the dummy module may be missing).
	dummy := func(name string, mtu int, addr string) {
		ipIn(t, e.node, "link", "add", name, "mtu", fmt.Sprint(mtu), "type", "veth", "peer", "name", name+"p", "mtu", fmt.Sprint(mtu))
		ipIn(t, e.node, "link", "set", name+"p", "up")
		ipIn(t, e.node, "link", "set", name, "up")
		ipIn(t, e.node, "addr", "add", addr, "dev", name, "nodad")
	}
	dummy("up0", 9000, "192.0.2.1/24")
	// A blackhole default is no way out.
	ipIn(t, e.node, "route", "add", "blackhole", "default", "metric", "10")
	if _, err := e.p.UplinkMTU(); !errors.Is(err, netplumb.ErrNoDefaultRoute) {
		t.Fatalf("UplinkMTU with a blackhole default = %v, want ErrNoDefaultRoute", err)
	}
	ipIn(t, e.node, "route", "add", "default", "via", "192.0.2.254", "dev", "up0", "metric", "100")
	want := func(link, family string, mtu int) {
		t.Helper()
		u, err := e.p.UplinkMTU()
		if err != nil || u != (netplumb.Uplink{Link: link, Family: family, MTU: mtu}) {
			t.Fatalf("UplinkMTU = %+v, %v; want %s %s %d", u, err, link, family, mtu)
		}
	}
	want("up0", "IPv4", 9000)
	// A second default with a higher metric is a backup: not used.
	dummy("up1", 1400, "198.51.100.1/24")
	ipIn(t, e.node, "route", "add", "default", "via", "198.51.100.254", "dev", "up1", "metric", "200")
	want("up0", "IPv4", 9000)
	// The route's own mtu attribute wins when smaller.
	ipIn(t, e.node, "route", "change", "default", "via", "192.0.2.254", "dev", "up0", "metric", "100", "mtu", "8000")
	want("up0", "IPv4", 8000)
	// An IPv6 default route through a smaller link: the smallest path wins.
	dummy("up6", 1480, "2001:db8::1/64")
	ipIn(t, e.node, "-6", "route", "add", "default", "via", "2001:db8::fe", "dev", "up6")
	want("up6", "IPv6", 1480)
	ipIn(t, e.node, "link", "set", "up6p", "mtu", "9000")
	ipIn(t, e.node, "link", "set", "up6", "mtu", "9000")
	want("up0", "IPv4", 8000)
}
