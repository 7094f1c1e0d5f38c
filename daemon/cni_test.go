package daemon_test

import (
	"context"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
)

const (
	pool4 = "10.100.0.0/24"
	pool6 = "fd00:100::/112"
	bits  = 3
)

func (e *env) defaultPool() { e.createPool("default", bits, pool4+","+pool6) }

// addrsOf returns the addresses of an ADD result, without prefix length.
func addrsOf(t *testing.T, res types.Result) []netip.Addr {
	t.Helper()
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, ip := range r.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			t.Fatalf("bad IP in result: %v", ip.Address)
		}
		out = append(out, a.Unmap())
	}
	return out
}

func ping(t *testing.T, ns string, addr netip.Addr) error {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "ping", "-c1", "-W2", addr.String()).CombinedOutput()
	if err != nil {
		return &pingError{string(out)}
	}
	return nil
}

type pingError struct{ out string }

func (e *pingError) Error() string { return "ping failed: " + e.out }

func TestCNILifecycle(t *testing.T) {
	e := newServingEnv(t)
	ctx := context.Background()
	c, list := e.cni(), e.netList()
	podNS, podPath := e.pod("pod")
	const id = "cafe0001"
	rt := podRT(id, podPath)

	res, err := c.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	addrs := addrsOf(t, res)
	if len(addrs) != 2 || !netip.MustParsePrefix(pool4).Contains(addrs[0]) || !netip.MustParsePrefix(pool6).Contains(addrs[1]) {
		t.Fatalf("ADD gave %v, want one address of %s and one of %s", addrs, pool4, pool6)
	}
	veth := hostVeth(id)

	// The pod: its addresses as /32 and /128, default routes via the link-local gateways.
	if got, want := join(podAddrs(t, podNS)), join([]string{addrs[0].String() + "/32", addrs[1].String() + "/128"}); got != want {
		t.Errorf("pod addresses %q, want %q", got, want)
	}
	var defaults []string
	for _, r := range routes(t, podNS) {
		if r.Dst == "default" {
			defaults = append(defaults, r.Gateway+" "+r.Dev)
		}
	}
	if got := join(defaults); got != "169.254.1.1 eth0 | fe80::1 eth0" {
		t.Errorf("pod default routes %q", got)
	}
	// The node: the veth, a /32 and a /128 through it, the block in table 119.
	if vs := veths(t, e.nodeNS); !slices.Contains(vs, veth) {
		t.Errorf("node veths %v, want %s", vs, veth)
	}
	wantRoutes := []string{addrs[0].String() + " dev " + veth, addrs[1].String() + " dev " + veth}
	if got := coilHostRoutes(t, e.nodeNS); join(got) != join(wantRoutes) {
		t.Errorf("node host routes %q, want %q", got, wantRoutes)
	}
	blocks := e.nodeBlocks("default")
	if len(blocks) != 1 {
		t.Fatalf("node owns blocks %v, want one", blocks)
	}
	if got, want := table(t, e.nodeNS, 119), blockRoutes(pool4, pool6, bits, blocks); join(got) != join(want) {
		t.Errorf("table 119 %q, want %q", got, want)
	}
	if perr := ping(t, e.nodeNS, addrs[0]); perr != nil {
		t.Errorf("node -> pod: %v", perr)
	}

	// CHECK with the cached prevResult.
	if cerr := c.CheckNetworkList(ctx, list, rt); cerr != nil {
		t.Errorf("CHECK: %v", cerr)
	}
	// A second ADD of the same container gives the same addresses.
	res2, err := c.AddNetworkList(ctx, list, rt)
	if err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if got := addrsOf(t, res2); !slices.Equal(got, addrs) {
		t.Errorf("second ADD gave %v, first %v", got, addrs)
	}
	// The pod's name is in the log.
	var assigned []*events.AddressAssigned
	for _, ev := range e.nodeEvents() {
		if p, ok := ev.Payload.(*events.AddressAssigned); ok && p.ContainerID == id {
			assigned = append(assigned, p)
		}
	}
	if len(assigned) != 1 || assigned[0].PodName != "web-"+id || assigned[0].PodNamespace != "default" ||
		!slices.Equal(assigned[0].Addrs, addrs) || assigned[0].Pool != "default" {
		t.Errorf("AddressAssigned events %+v", assigned)
	}

	// DEL: answered at once, finished in the background.
	if err := c.DelNetworkList(ctx, list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		_, held := e.held()[attachKey{id, "eth0"}]
		return !held && !slices.Contains(veths(t, e.nodeNS), veth)
	}, "DEL finished (veth gone, address released)")
	e.expectNoLeak(id)
	if rel := e.released(id); len(rel) != 1 || rel[0].Reason != "CNI DEL" {
		t.Errorf("AddressReleased events %+v", rel)
	}
	if err := c.DelNetworkList(ctx, list, rt); err != nil {
		t.Errorf("second DEL: %v", err)
	}
	// The block stays (grace period), and so does its route.
	if got, want := table(t, e.nodeNS, 119), blockRoutes(pool4, pool6, bits, e.nodeBlocks("default")); join(got) != join(want) || len(want) == 0 {
		t.Errorf("table 119 after DEL %q, want %q", got, want)
	}
}

// TestCNIGC: GC releases what the runtime does not list, and nothing else. libcni first
// DELs the attachments of its cache that are not valid; coild's GC must find the rest
// (here one added through another cache, as after a runtime lost its cache).
func TestCNIGC(t *testing.T) {
	e := newServingEnv(t)
	ctx := context.Background()
	c, other, list := e.cni(), e.cni(), e.netList()
	ids := []string{"aaaa0001", "bbbb0002", "cccc0003"}
	addrs := map[string][]netip.Addr{}
	for i, id := range ids {
		_, path := e.pod(id[:4])
		cc := c
		if i == 2 {
			cc = other // libcni's cache of c does not know this one
		}
		res, err := cc.AddNetworkList(ctx, list, podRT(id, path))
		if err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		addrs[id] = addrsOf(t, res)
	}
	valid := []types.GCAttachment{{ContainerID: "aaaa0001", IfName: "eth0"}}
	if err := c.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		h := e.held()
		vs := veths(t, e.nodeNS)
		return len(h) == 1 && !slices.Contains(vs, hostVeth("bbbb0002")) && !slices.Contains(vs, hostVeth("cccc0003"))
	}, "GC released bbbb0002 and cccc0003")
	e.expectNoLeak("bbbb0002")
	e.expectNoLeak("cccc0003")
	if got := e.held()[attachKey{"aaaa0001", "eth0"}]; !slices.Equal(got, addrs["aaaa0001"]) {
		t.Errorf("valid attachment holds %v, want %v", got, addrs["aaaa0001"])
	}
	if vs := veths(t, e.nodeNS); !slices.Contains(vs, hostVeth("aaaa0001")) {
		t.Errorf("valid attachment's veth is gone: %v", vs)
	}
	rel := e.released("cccc0003")
	if len(rel) != 1 || !strings.HasPrefix(rel[0].Reason, "CNI GC") {
		t.Errorf("cccc0003 released with %+v, want a CNI GC reason", rel)
	}
	if err := ping(t, e.nodeNS, addrs["aaaa0001"][0]); err != nil {
		t.Errorf("valid pod after GC: %v", err)
	}
	// GC with no list does nothing. (Through a libcni whose cache is empty: with no list,
	// libcni itself DELs every attachment it has cached before it calls the plugin.)
	if err := e.cni().GCNetworkList(ctx, list, nil); err != nil {
		t.Fatalf("GC without list: %v", err)
	}
	if h := e.held(); len(h) != 1 {
		t.Errorf("GC without a list changed the attachments: %v", h)
	}
}
