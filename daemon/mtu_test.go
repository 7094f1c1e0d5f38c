package daemon_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/daemon"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
)

// linkMTU reads the MTU of dev in namespace ns.
func linkMTU(t *testing.T, ns, dev string) int {
	t.Helper()
	return showLink(t, ns, dev).MTU
}

// addMTU adds a pod with the netconf extra and checks that both ends of its pair and
// both interfaces of the result have the MTU want.
func (e *env) addMTU(id, extra string, want int) (podNS string) {
	e.t.Helper()
	podNS, podPath := e.pod("mtu")
	res, err := e.cni().AddNetworkList(context.Background(), e.netListWith(extra), podRT(id, podPath))
	if err != nil {
		e.t.Fatalf("ADD %s: %v", id, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		e.t.Fatal(err)
	}
	if pod, host := linkMTU(e.t, podNS, "eth0"), linkMTU(e.t, e.nodeNS, hostVeth(id)); pod != want || host != want {
		e.t.Errorf("ADD %s (netconf %q): pod eth0 has MTU %d, host veth %d; want %d", id, extra, pod, host, want)
	}
	for _, i := range r.Interfaces {
		if i.Mtu != want {
			e.t.Errorf("ADD %s: result interface %s has mtu %d, want %d", id, i.Name, i.Mtu, want)
		}
	}
	return podNS
}

// uplink gives the node namespace a default route through a veth of MTU mtu (a veth
// pair inside the namespace: the test's own, never the root namespace's).
func (e *env) uplink(mtu int) {
	e.t.Helper()
	ip := func(args ...string) {
		e.t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", e.nodeNS}, args...)...).CombinedOutput(); err != nil {
			e.t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	m := fmt.Sprint(mtu)
	ip("link", "add", "uplink0", "mtu", m, "type", "veth", "peer", "name", "uplink0p", "mtu", m)
	ip("link", "set", "uplink0p", "up")
	ip("link", "set", "uplink0", "up")
	ip("addr", "add", "192.0.2.1/24", "dev", "uplink0")
	ip("route", "add", "default", "via", "192.0.2.254", "dev", "uplink0")
}

// TestMTUNetconfAndFlag: the netconf "mtu" goes on both veth ends; coild's --mtu when the
// netconf has none; the netconf wins over the flag.
func TestMTUNetconfAndFlag(t *testing.T) {
	e := newServingEnvWith(t, func(cfg *daemon.Config) { cfg.MTU = 1450 })
	e.addMTU("cafe0001", "", 1450)
	e.addMTU("cafe0002", `,"mtu":9000`, 9000)
	e.addMTU("cafe0003", `,"mtu":1280`, 1280)
}

// TestMTUAuto: with no --mtu and no netconf "mtu", pods get the MTU of the interface of
// the node's default route (9000 here), read at start; a change of it reaches new pods
// within a reconcile interval; without a default route, 1500.
func TestMTUAuto(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	e.uplink(9000)
	e.startDaemon(e.config())
	e.addMTU("cafe0001", "", 9000)
	e.addMTU("cafe0002", `,"mtu":1500`, 1500) // the netconf wins over auto

	// The uplink's MTU changes: new pods follow (coild reads it every reconcile interval,
	// 200 ms here, never during an ADD).
	if out, err := exec.Command("ip", "-n", e.nodeNS, "link", "set", "uplink0", "mtu", "4000").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	c := cniproto.NewClient(e.sock, 20*time.Second)
	_, probePath := e.pod("probe")
	var got int
	testutil.Eventually(t, 10*time.Second, func() bool {
		res, err := c.Add(context.Background(), &cniproto.Request{ContainerID: "cafe0003", IfName: "eth0", NetNS: probePath})
		if err != nil {
			t.Fatalf("ADD: %v", err)
		}
		got = res.MTU
		return got == 4000
	}, "a new pod gets MTU 4000 after the uplink changed (last: %d)", &got)

	// No default route: 1500.
	e2 := newEnv(t)
	e2.defaultPool()
	e2.startDaemon(e2.config())
	e2.addMTU("cafe0004", "", 1500)
}

// TestMTUCheck: CHECK verifies both ends' MTU; a changed one fails CHECK with the
// interface, what it has, what it should have and where that comes from.
func TestMTUCheck(t *testing.T) {
	e := newServingEnv(t)
	ctx := context.Background()
	c, list := e.cni(), e.netListWith(`,"mtu":9000`)
	podNS, podPath := e.pod("chk")
	rt := podRT("cafe0001", podPath)
	if _, err := c.AddNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if err := c.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	for _, tc := range []struct{ ns, dev string }{{podNS, "eth0"}, {e.nodeNS, hostVeth("cafe0001")}} {
		if out, err := exec.Command("ip", "-n", tc.ns, "link", "set", tc.dev, "mtu", "1500").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		err := c.CheckNetworkList(ctx, list, rt)
		want := tc.dev + ` has MTU 1500, want 9000`
		if code, msg := cniCode(t, err); code != types.ErrInternal || !strings.Contains(msg, want) || !strings.Contains(msg, `(MTU 9000 from netconf "mtu")`) {
			t.Errorf("CHECK after %s's MTU changed: %d %q, want 999 with %q", tc.dev, code, msg, want)
		}
	}
	// A repeated ADD repairs it; CHECK passes again.
	if _, err := c.AddNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("repeated ADD: %v", err)
	}
	if err := c.CheckNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("CHECK after the repeated ADD: %v", err)
	}
}

// TestMTURefusals: an MTU no pod can use is refused and changes nothing: out of range
// in the netconf (the plugin refuses it, coild again), below IPv6's 1280 for a pool with
// IPv6 whether it comes from the netconf or from --mtu; an IPv4-only pool takes it.
func TestMTURefusals(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	e.createPool("v4", bits, "10.101.0.0/24")
	cfg := e.config()
	cfg.MTU = 1000
	e.startDaemon(cfg)
	ctx := context.Background()
	_, podPath := e.pod("ref")
	before := e.nodeState()
	c := e.cni()
	for _, tc := range []struct {
		extra string
		msg   string
	}{
		{`,"mtu":575`, `invalid "mtu" 575: below 576, the minimum MTU of IPv4`},
		{`,"mtu":65536`, `invalid "mtu" 65536: above 65535`},
		{`,"mtu":"9000"`, `"mtu" must be a number, got "9000"`},
		{`,"mtu":9000.5`, `invalid "mtu" 9000.5: want a whole number`},
		{`,"mtu":1279`, `invalid MTU 1279 from netconf "mtu": below 1280, the minimum MTU of IPv6 (RFC 8200): pool "default" has IPv6`},
		{``, `invalid MTU 1000 from coild --mtu: below 1280, the minimum MTU of IPv6 (RFC 8200): pool "default" has IPv6`},
	} {
		rt := podRT("cafe0001", podPath)
		_, err := c.AddNetworkList(ctx, e.netListWith(tc.extra), rt)
		if code, msg := cniCode(t, err); code != types.ErrInvalidNetworkConfig || !strings.Contains(msg, tc.msg) {
			t.Errorf("netconf %q: got %d %q, want 7 with %q", tc.extra, code, msg, tc.msg)
		}
	}
	if after := e.nodeState(); after != before {
		t.Errorf("the node changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, ev := range e.nodeEvents() {
		if _, ok := ev.Payload.(*events.NodeRegistered); !ok {
			t.Errorf("an event was appended for a refused request: %s %+v", ev.Payload.EventType(), ev.Payload)
		}
	}
	// The IPv4-only pool takes 1000 (from --mtu) and 576.
	e.addMTU("cafe0002", `,"pool":"v4"`, 1000)
	e.addMTU("cafe0003", `,"pool":"v4","mtu":576`, 576)
}
