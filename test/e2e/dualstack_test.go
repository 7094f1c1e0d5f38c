package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/demo"
)

// The dual-stack pool of TestDualStack: block i is the i-th /27 of pool4 and the i-th
// /123 of pool6, and a pod gets the same offset in both.
var (
	pool4 = netip.MustParsePrefix("10.100.0.0/16")
	pool6 = netip.MustParsePrefix("fd00:100::/112")
)

// TestDualStack: on a dual-stack fabric with a dual-stack pool, every pod gets one IPv4
// and one IPv6 address from the pool (same offset in both) and an IPv6 default route via
// fe80::1; each node's export table holds one IPv4 and one IPv6 blackhole route per block
// it owns (as the log says); each node learns the other's IPv6 block over BGP via its
// fabric IPv6 address; and pods on different nodes reach each other over IPv6 and IPv4.
func TestDualStack(t *testing.T) {
	c := startClusterWithPool(t, demo.Config{Nodes: 2}, pool4.String()+","+pool6.String(), 5)
	ctx := context.Background()
	pods := map[*demo.Node][]*demo.Pod{}
	for _, n := range c.Nodes {
		pods[n] = addPods(t, n, 2, "p")
	}

	for _, n := range c.Nodes {
		for _, p := range pods[n] {
			checkDualStackPod(t, p)
		}
	}

	// Each node exports one IPv4 and one IPv6 block holding its pods, and they are the
	// blocks the log says it owns.
	owned := blocksFromLogAllFamilies(t, c)
	block6 := map[*demo.Node]netip.Prefix{}
	for _, n := range c.Nodes {
		var got4, got6 []netip.Prefix
		testutil.Eventually(t, 10*time.Second, func() bool {
			got4, got6 = exportedBlackholes(t, n, false), exportedBlackholes(t, n, true)
			return len(got4) == 1 && len(got6) == 1
		}, "%s exports one IPv4 and one IPv6 block (IPv4 %v, IPv6 %v)", n.Name, &got4, &got6)
		for _, p := range pods[n] {
			if !got4[0].Contains(p.Addr) || !got6[0].Contains(p.Addr6) {
				t.Errorf("%s exports %s and %s; they do not hold pod %s (%s, %s)", n.Name, got4[0], got6[0], p.Name, p.Addr, p.Addr6)
			}
		}
		if got4[0].Bits() != 27 || got6[0].Bits() != 123 {
			t.Errorf("%s exports %s and %s; want a /27 and a /123", n.Name, got4[0], got6[0])
		}
		if want := sortPrefixes([]netip.Prefix{got4[0], got6[0]}); !slices.Equal(owned[n.Name], want) {
			t.Errorf("%s exports %v, the log says it owns %v", n.Name, want, owned[n.Name])
		}
		block6[n] = got6[0]
	}

	// Each node learns the other's IPv6 block over BGP, via the owner's fabric address;
	// and the IPv4 routes converge as usual.
	for _, n := range c.Nodes {
		for _, m := range c.Nodes {
			if m == n {
				continue
			}
			var last []lab.Route
			testutil.Eventually(t, 20*time.Second, func() bool {
				last = bgpRoutes6(t, n)
				return len(last) == 1 && last[0].Dst == block6[m] && last[0].Gateway == m.FabricAddr6
			}, "%s learns %s's IPv6 block %s via %s (BGP routes: %v)", n.Name, m.Name, block6[m], m.FabricAddr6, &last)
		}
	}
	waitConverged(t, c)

	// Every pod reaches every pod on the other node, over both families. A first echo may
	// be lost while neighbour discovery settles: wait for a reply, and log the retries.
	pairs := 0
	for _, a := range append(slices.Clone(pods[c.Nodes[0]]), pods[c.Nodes[1]]...) {
		for _, n := range c.Nodes {
			if n == a.Node {
				continue
			}
			for _, b := range pods[n] {
				for _, dst := range []netip.Addr{b.Addr6, b.Addr} {
					var (
						out      []byte
						err      error
						attempts int
					)
					testutil.Eventually(t, 15*time.Second, func() bool {
						attempts++
						out, err = a.Ping(ctx, dst, 1)
						return err == nil
					}, "%s/%s reaches %s/%s at %s (last: %v\n%s)", a.Node.Name, a.Name, b.Node.Name, b.Name, dst, &err, &out)
					if attempts > 1 {
						t.Logf("%s/%s to %s: %d pings before the first reply", a.Node.Name, a.Name, dst, attempts)
					}
					pairs++
				}
			}
		}
	}
	if pairs != 16 {
		t.Fatalf("pinged %d pairs and families, want 16", pairs)
	}
}

// checkDualStackPod checks a pod's addresses, inside its namespace and in its CNI result:
// one global IPv4 /32 and one global IPv6 /128 from the pool at the same offset, and an
// IPv6 default route via fe80::1.
func checkDualStackPod(t *testing.T, p *demo.Pod) {
	t.Helper()
	ctx := context.Background()
	if !pool4.Contains(p.Addr) || !pool6.Contains(p.Addr6) {
		t.Fatalf("%s/%s: CNI result addresses %s, %s; want one in %s and one in %s\n%s",
			p.Node.Name, p.Name, p.Addr, p.Addr6, pool4, pool6, p.Result)
	}
	off4 := p.Addr.As4()
	off6 := p.Addr6.As16()
	if o4, o6 := int(off4[2])<<8|int(off4[3]), int(off6[14])<<8|int(off6[15]); o4 != o6 {
		t.Errorf("%s/%s: %s is offset %d in %s, %s is offset %d in %s; want the same",
			p.Node.Name, p.Name, p.Addr, o4, pool4, p.Addr6, o6, pool6)
	}

	out, err := p.Exec(ctx, "ip", "-j", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("%+v", err)
	}
	var links []struct {
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	if err = json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("%s/%s: parse ip -j addr (%v): %s", p.Node.Name, p.Name, err, out)
	}
	var global []string
	for _, a := range links[0].AddrInfo {
		if a.Scope == "global" {
			global = append(global, a.Local+"/"+strconv.Itoa(a.PrefixLen))
		}
	}
	slices.Sort(global)
	if want := []string{p.Addr.String() + "/32", p.Addr6.String() + "/128"}; !slices.Equal(global, want) {
		t.Errorf("%s/%s: global addresses on eth0 %v, want %v", p.Node.Name, p.Name, global, want)
	}

	out, err = p.Exec(ctx, "ip", "-6", "-j", "route", "show", "default")
	if err != nil {
		t.Fatalf("%+v", err)
	}
	var routes []struct {
		Gateway string `json:"gateway"`
		Dev     string `json:"dev"`
	}
	if err = json.Unmarshal(out, &routes); err != nil {
		t.Fatalf("%s/%s: parse ip -j route (%v): %s", p.Node.Name, p.Name, err, out)
	}
	if len(routes) != 1 || routes[0].Gateway != "fe80::1" || routes[0].Dev != "eth0" {
		t.Errorf("%s/%s: IPv6 default routes %s; want one via fe80::1 dev eth0", p.Node.Name, p.Name, bytes.TrimSpace(out))
	}
}

// exportedBlackholes lists the node's block routes of one family in its export table
// (protocol 30), sorted. A route of that protocol that is not a blackhole fails the test.
func exportedBlackholes(t *testing.T, n *demo.Node, v6 bool) []netip.Prefix {
	t.Helper()
	routes := n.Routes
	if v6 {
		routes = n.Routes6
	}
	rs, err := routes(context.Background(), lab.DefaultExportTable)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	var ps []netip.Prefix
	for _, r := range rs {
		if r.Protocol != strconv.Itoa(lab.DefaultRouteProtocol) {
			continue
		}
		if r.Type != "blackhole" {
			t.Fatalf("%s: export table route %s is %s, want blackhole", n.Name, r.Dst, r.Type)
		}
		ps = append(ps, r.Dst)
	}
	return sortPrefixes(ps)
}

// bgpRoutes6 lists the IPv6 routes BIRD installed in the node's main table.
func bgpRoutes6(t *testing.T, n *demo.Node) []lab.Route {
	t.Helper()
	rs, err := n.Routes6(context.Background(), 254)
	if err != nil {
		t.Fatalf("%+v", err)
	}
	var out []lab.Route
	for _, r := range rs {
		if r.Protocol == "bird" {
			out = append(out, r)
		}
	}
	return out
}

// blocksFromLogAllFamilies returns every node's block prefixes, both families, as
// `coilctl block list -o json` reads them from the log, each list sorted.
func blocksFromLogAllFamilies(t *testing.T, c *demo.Cluster) map[string][]netip.Prefix {
	t.Helper()
	out, err := c.Coilctl(context.Background(), "block", "list", "-o", "json")
	if err != nil {
		t.Fatalf("%+v", err)
	}
	var views []struct {
		Node     string   `json:"node"`
		Prefixes []string `json:"prefixes"`
	}
	if err := json.Unmarshal(out, &views); err != nil {
		t.Fatalf("parse coilctl block list: %v: %s", err, out)
	}
	m := map[string][]netip.Prefix{}
	for _, v := range views {
		for _, s := range v.Prefixes {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				t.Fatalf("block prefix %q: %v", s, err)
			}
			m[v.Node] = append(m[v.Node], p)
		}
	}
	for k, ps := range m {
		m[k] = sortPrefixes(ps)
	}
	if len(m) != 2 {
		t.Fatalf("blocks in the log by node: %v; want blocks on both nodes", m)
	}
	return m
}
