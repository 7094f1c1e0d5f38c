package daemon_test

import (
	"context"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
)

// fixedNetList is the conflist with the "ips" capability declared, as libcni needs it to
// pass runtimeConfig "ips" to coil.
func (e *env) fixedNetList() *libcni.NetworkConfigList {
	e.t.Helper()
	list, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.1.0","name":"coilnet","plugins":[{"type":"coil","socket":"` +
		e.sock + `","timeout":"20s","capabilities":{"ips":true}}]}`))
	if err != nil {
		e.t.Fatal(err)
	}
	return list
}

func withIPs(rt *libcni.RuntimeConf, ips ...string) *libcni.RuntimeConf {
	rt.CapabilityArgs = map[string]any{"ips": ips}
	return rt
}

// otherNode runs an allocator for another node in-process (no coild: the log is what
// matters), to own blocks of the pool.
func (e *env) otherNode(name string) *allocator.Node {
	e.t.Helper()
	n := allocator.NewNode(allocator.NodeConfig{Node: name, Log: e.log})
	allocatortest.Run(e.t, n)
	return n
}

// TestFixedAddressThroughLibcni: a pod asks for an address through the CNI "ips"
// capability (libcni's runtimeConfig, CIDR form) in a block another node owns: coild
// claims it, plumbs it, exports it as a /32 blackhole in table 119 (next to nothing
// else: the node owns no block), and on DEL withdraws it and ends the claim. A second pod
// asking for a held address is refused with code 11 naming the holder; one outside the
// pool, code 7; a refused ADD changes nothing on the node.
func TestFixedAddressThroughLibcni(t *testing.T) {
	e := newEnv(t)
	e.createPool("v4", bits, "10.101.0.0/24")
	cfg := e.config()
	cfg.DefaultPool = "v4"
	e.startDaemon(cfg)
	ctx := context.Background()
	admin := &allocator.Admin{Log: e.log, Clock: events.SystemClock{}, Actor: "test"}
	if err := admin.RequireLevel(ctx, events.Level1, "test"); err != nil {
		t.Fatal(err)
	}
	other := e.otherNode("other")
	theirs, err := other.Allocate(ctx, allocator.Request{ContainerID: "theirs", IfName: "eth0", Pool: "v4", PodNamespace: "default", PodName: "theirs-0"})
	if err != nil {
		t.Fatal(err)
	}
	block := theirs.BlockPrefixes[0] // 10.101.0.0/29
	want := block.Addr().Next().Next().Next()
	c := e.cni()
	_, podPath := e.pod("fixed")
	before := e.nodeState()

	// Refusals first: nothing changes on the node.
	_, otherPath := e.pod("refused")
	for _, tc := range []struct {
		ip   string
		code uint
		msg  []string
	}{
		{theirs.Addrs[0].String(), types.ErrTryAgainLater, []string{`fixed address (runtimeConfig "ips") is in use`,
			"address " + theirs.Addrs[0].String() + " is held by pod default/theirs-0 (container theirs, interface eth0) on node other"}},
		{"192.0.2.7/24", types.ErrInvalidNetworkConfig, []string{`invalid fixed address (runtimeConfig "ips") for pool "v4"`, "address 192.0.2.7 is in no pool"}},
		{"banana", types.ErrInvalidNetworkConfig, []string{`invalid runtimeConfig "ips": cniproto: invalid fixed address "banana"`}},
	} {
		_, aerr := c.AddNetworkList(ctx, e.fixedNetList(), withIPs(podRT("cafe0009", otherPath), tc.ip))
		code, msg := cniCode(t, aerr)
		if code != tc.code {
			t.Errorf("%s: code %d (%s), want %d", tc.ip, code, msg, tc.code)
		}
		for _, m := range tc.msg {
			if !strings.Contains(msg, m) {
				t.Errorf("%s: %q does not say %q", tc.ip, msg, m)
			}
		}
		if err = c.DelNetworkList(ctx, e.fixedNetList(), podRT("cafe0009", otherPath)); err != nil {
			t.Fatal(err)
		}
	}
	if after := e.nodeState(); after != before {
		t.Errorf("a refused ADD changed the node:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	res, err := c.AddNetworkList(ctx, e.fixedNetList(), withIPs(podRT("cafe0001", podPath), want.String()+"/24"))
	if err != nil {
		t.Fatal(err)
	}
	if got := addrsOf(t, res); !slices.Equal(got, []netip.Addr{want}) {
		t.Fatalf("ADD result %v, want %s", got, want)
	}
	host := "blackhole " + netip.PrefixFrom(want, 32).String()
	waitFor(t, func() bool { return slices.Equal(table4(t, e.nodeNS, 119), []string{host}) },
		"table 119 holds the fixed address as a /32 and nothing else")
	if got := podAddrs(t, strings.TrimPrefix(podPath, "/var/run/netns/")); len(got) == 0 || !strings.HasPrefix(got[0], want.String()) {
		t.Fatalf("pod addresses %v, want %s", got, want)
	}
	var claimed *events.AddressClaimed
	evs, err := readPool(ctx, e.log, "v4")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if p, ok := ev.Payload.(*events.AddressClaimed); ok {
			claimed = p
			if ev.Actor != nodeName || ev.Time.IsZero() {
				t.Errorf("claim by %q at %s, want the node and a time", ev.Actor, ev.Time)
			}
		}
	}
	if claimed == nil || claimed.Node != nodeName || claimed.ContainerID != "cafe0001" || claimed.PodName != "web-cafe0001" || claimed.Addrs[0] != want {
		t.Fatalf("claim event %+v", claimed)
	}

	// DEL: the route is withdrawn, the claim ends.
	if err := c.DelNetworkList(ctx, e.fixedNetList(), podRT("cafe0001", podPath)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(table4(t, e.nodeNS, 119)) == 0 }, "table 119 empty after the DEL")
	waitFor(t, func() bool {
		evs, err := readPool(ctx, e.log, "v4")
		if err != nil {
			t.Fatal(err)
		}
		last := evs[len(evs)-1]
		p, ok := last.Payload.(*events.AddressClaimReleased)
		return ok && p.ContainerID == "cafe0001" && p.Reason == "CNI DEL"
	}, "the claim ended with the DEL")
}

func readPool(ctx context.Context, log events.Log, pool string) ([]*events.Event, error) {
	var out []*events.Event
	_, err := log.Read(ctx, events.PoolStream(pool), 1, 0, func(e *events.Event) error { out = append(out, e); return nil })
	return out, err
}

// table4 lists the IPv4 routes of a table of ns as "TYPE DST" (none when the table does
// not exist yet).
func table4(t *testing.T, ns string, id int) []string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-4", "-o", "route", "show", "table", strconv.Itoa(id)).CombinedOutput()
	if err != nil {
		t.Fatalf("ip route show table %d: %v: %s", id, err, out)
	}
	var rs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "blackhole" {
			dst := f[1]
			if !strings.Contains(dst, "/") {
				dst += "/32" // ip prints a host route without its length
			}
			rs = append(rs, "blackhole "+dst)
		} else if len(f) > 0 {
			rs = append(rs, line)
		}
	}
	return rs
}
