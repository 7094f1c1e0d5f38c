package kubenodes

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestPodsGetAddressesFromNamespacePool: pods on both kubelet nodes, in a namespace
// annotated with coil.cybozu.com/pool, get addresses from that pool (coild reads the
// annotation through its in-cluster client), and pods of a namespace without the
// annotation from the default pool.
func TestPodsGetAddressesFromNamespacePool(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	if _, err := c.Coilctl(ctx, "pool", "create", "blue", "10.120.0.0/16", "--block-size-bits", "5"); err != nil {
		t.Fatal(err)
	}
	namespace(t, c, "blue", map[string]string{"coil.cybozu.com/pool": "blue"})
	namespace(t, c, "plain", nil)
	blue := netip.MustParsePrefix("10.120.0.0/16")
	def := netip.MustParsePrefix("10.100.0.0/16")
	for _, n := range c.Nodes {
		p := createPod(t, c, podSpec(c, "blue", "web-"+n.Name, n.Name))
		if a := podAddr(t, p); !blue.Contains(a) {
			t.Errorf("pod blue/%s on %s has %s, not from pool blue %s", p.Name, n.Name, a, blue)
		}
		q := createPod(t, c, podSpec(c, "plain", "web-"+n.Name, n.Name))
		if a := podAddr(t, q); !def.Contains(a) {
			t.Errorf("pod plain/%s on %s has %s, not from pool default %s", q.Name, n.Name, a, def)
		}
	}
	// The log agrees: each pod's address is held by its pod, on its node.
	out, err := c.Coilctl(ctx, "address", "list", "--pool", "blue", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Address, Node, PodNamespace, PodName, PodUID string
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(rows) != len(c.Nodes) {
		t.Fatalf("pool blue has %d addresses in use, want %d: %s", len(rows), len(c.Nodes), out)
	}
	for _, r := range rows {
		if r.PodNamespace != "blue" || r.PodName != "web-"+r.Node || r.PodUID == "" {
			t.Errorf("address %s recorded for %s/%s (uid %q) on %s", r.Address, r.PodNamespace, r.PodName, r.PodUID, r.Node)
		}
	}
}

// TestPodsReachEachOtherAcrossNodes: two pods per node; every pod reaches every pod on
// the other node over HTTP (pod -> node -> block route learnt over BGP -> node -> pod).
func TestPodsReachEachOtherAcrossNodes(t *testing.T) {
	c := need(t)
	namespace(t, c, "mesh", nil)
	type placed struct {
		node string
		addr netip.Addr
	}
	var pods []placed
	var names []string
	for _, n := range c.Nodes {
		for _, i := range []string{"a", "b"} {
			p := createPod(t, c, podSpec(c, "mesh", "web-"+n.Name+"-"+i, n.Name))
			pods = append(pods, placed{n.Name, podAddr(t, p)})
			names = append(names, p.Name)
		}
	}
	cs := client(t, c)
	for i, from := range pods {
		var targets []string
		for _, to := range pods {
			if to.node != from.node {
				targets = append(targets, hostPort(to.addr, WorkloadPort))
			}
		}
		p, err := cs.CoreV1().Pods("mesh").Get(context.Background(), names[i], metav1GetOptions)
		if err != nil {
			t.Fatal(err)
		}
		probe(t, c, p, targets...)
	}
}

// TestDeletedPodReleasesAddress: deleting a pod releases its address (the runtime's CNI
// DEL reaches coild), and `coilctl history` names the pod and its UID.
func TestDeletedPodReleasesAddress(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	namespace(t, c, "gone", nil)
	p := createPod(t, c, podSpec(c, "gone", "web", c.Nodes[0].Name))
	addr := podAddr(t, p)
	deletePod(t, c, "gone", "web")
	waitUntil(t, 30*time.Second, "address "+addr.String()+" released", func() (bool, string) {
		out, err := c.Coilctl(ctx, "address", "show", addr.String())
		if err != nil && strings.Contains(err.Error(), "is free") {
			return true, ""
		}
		return false, string(out) + errString(err)
	})
	out, err := c.Coilctl(ctx, "history", addr.String(), "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"gone"`) || !strings.Contains(string(out), string(p.UID)) {
		t.Errorf("history of %s does not name pod gone/web (uid %s): %s", addr, p.UID, out)
	}
	tab, err := c.Coilctl(ctx, "history", "--pod", "gone/web")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(tab), addr.String()) {
		t.Errorf("history --pod gone/web does not list %s:\n%s", addr, tab)
	}
	t.Logf("coilctl history --pod gone/web:\n%s", tab)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
