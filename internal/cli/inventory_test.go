package cli_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/coil-net/coil/allocator"
)

// fixture is two pools and two nodes with allocations made through the node allocator.
// Nodes choose blocks at random among the lowest free ones, so tests read prefixes and
// addresses from the assignments.
type fixture struct {
	*env
	kill1, kill2   func()
	c1, c2, c3, c4 *allocator.Assignment
}

func cluster2(t *testing.T) *fixture {
	t.Helper()
	return cluster2Layout(t, "block-streams")
}

// cluster2Layout is cluster2 with both pools in the given --layout.
func cluster2Layout(t *testing.T, layout string) *fixture {
	t.Helper()
	e := newEnv(t)
	e.ok("pool", "create", "default", "10.0.0.0/24", "--block-size-bits", "4", "--layout", layout, noSkipNB)
	e.ok("pool", "create", "dual", "10.1.0.0/24,fd00:1::/120", "--block-size-bits", "3", "--layout", layout, noSkipNB)
	n1, kill1 := e.startNode("n1")
	n2, kill2 := e.startNode("n2")
	f := &fixture{env: e, kill1: kill1, kill2: kill2}
	f.c1 = e.alloc(n1, "c1aaaaaaaaaaaaaaaaaa", "default", "web-1")
	f.c2 = e.alloc(n1, "c2", "default", "web-2")
	f.c3 = e.alloc(n2, "c3", "default", "db-1")
	f.c4 = e.alloc(n2, "c4", "dual", "dual-1")
	return f
}

// subst replaces {name} in s by the fixture's addresses and prefixes.
func (f *fixture) subst(s string) string {
	r := []string{}
	for name, a := range map[string]*allocator.Assignment{"c1": f.c1, "c2": f.c2, "c3": f.c3, "c4": f.c4} {
		r = append(r, "{"+name+"}", a.Addrs[0].String(), "{"+name+"/}", a.BlockPrefixes[0].String(),
			"{"+name+"#}", fmt.Sprint(a.Block))
		if len(a.Addrs) > 1 {
			r = append(r, "{"+name+"6}", a.Addrs[1].String(), "{"+name+"6/}", a.BlockPrefixes[1].String())
		}
	}
	return strings.NewReplacer(r...).Replace(s)
}

// wantContains is wantContains of wants with their {name}s replaced (subst).
func (f *fixture) wantContains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	subst := make([]string, len(wants))
	for i, w := range wants {
		subst[i] = f.subst(w)
	}
	wantContains(t, what, out, subst...)
}

func TestAddressBlockNodeListings(t *testing.T) {
	e := cluster2(t)

	addrs := e.ok("address", "list")
	t.Logf("address list:\n%s", addrs)
	wantHeader(t, addrs, "ADDRESS POOL BLOCK NODE CONTAINER IF POD SINCE")
	for _, want := range []string{
		"{c1} default {c1/} n1 c1aaaaaaaaaa.. eth0 ns/web-1 2030-01-02T03:04:05Z",
		"{c2} default {c2/} n1 c2 eth0 ns/web-2 2030-01-02T03:04:05Z",
		"{c3} default {c3/} n2 c3 eth0 ns/db-1 2030-01-02T03:04:05Z",
		// Dual stack: one row per family.
		"{c4} dual {c4/} n2 c4 eth0 ns/dual-1 2030-01-02T03:04:05Z",
		"{c46} dual {c46/} n2 c4 eth0 ns/dual-1 2030-01-02T03:04:05Z",
	} {
		want = e.subst(want)
		key, _, _ := strings.Cut(want, " ")
		if got := strings.Join(row(t, addrs, key), " "); got != want {
			t.Errorf("row %s = %q, want %q", key, got, want)
		}
	}
	if e.c2.Addrs[0] != e.c1.Addrs[0].Next() {
		t.Fatalf("c2 got %v, want the address after c1's %v", e.c2.Addrs, e.c1.Addrs)
	}
	if n := len(lines(addrs)); n != 6 {
		t.Fatalf("%d lines, want header + 5 addresses", n)
	}
	if out := e.ok("address", "list", "--node", "n1"); len(lines(out)) != 3 || strings.Contains(out, "n2") {
		t.Fatalf("--node n1:\n%s", out)
	}
	if out := e.ok("address", "list", "--pool", "dual", "--node", "n2"); len(lines(out)) != 3 || strings.Contains(out, "default") {
		t.Fatalf("--pool dual:\n%s", out)
	}
	var av []struct {
		Address     netip.Addr `json:"address"`
		ContainerID string     `json:"containerID"`
	}
	if err := json.Unmarshal([]byte(e.ok("address", "list", "--node", "n1", "-o", "json")), &av); err != nil ||
		len(av) != 2 || av[0].ContainerID != "c1aaaaaaaaaaaaaaaaaa" {
		t.Fatalf("address list -o json = %+v, %v", av, err)
	}
	e.fails(3, []string{"address", "list", "--pool", "nope"}, `pool "nope" not found`)
	e.fails(3, []string{"address", "list", "--node", "nope"}, `node "nope" not found`)
	e.fails(2, []string{"address", "list", "--node", "NOPE!"}, "--node")

	show := e.ok("address", "show", e.c2.Addrs[0].String())
	t.Logf("address show:\n%s", show)
	e.wantContains(t, "address show", show, "Address:     {c2}", "Pool:        default", "Block:       {c2/} (index {c2#})",
		"Node:        n1", "Container:   c2", "Interface:   eth0", "Pod:         ns/web-2", "Since:       2030-01-02T03:04:05Z",
	)
	if show := e.ok("address", "show", e.c4.Addrs[1].String()); !strings.Contains(show, e.subst("Addresses:   {c4},{c46}")) {
		t.Errorf("dual address show:\n%s", show)
	}
	var one map[string]any
	if err := yaml.Unmarshal([]byte(e.ok("address", "show", e.c3.Addrs[0].String(), "-o", "yaml")), &one); err != nil || one["podName"] != "db-1" {
		t.Fatalf("address show -o yaml = %v, %v", one, err)
	}
	free := e.c1.BlockPrefixes[0].Addr().Next().Next().Next() // offsets 0 and 1 are held
	e.fails(3, []string{"address", "show", free.String()}, e.subst("address "+free.String()+" is free (pool default, block {c1#}, owned by node n1)"))
	e.fails(3, []string{"address", "show", "10.0.0.200"}, "address 10.0.0.200 is free (pool default, block 12, not assigned to any node)")
	e.fails(3, []string{"address", "show", "192.168.1.1"}, "address 192.168.1.1 is free (in no pool)")
	e.fails(2, []string{"address", "show", "10.0.0"}, `"10.0.0" is not an IP address`)

	blocks := e.ok("block", "list")
	t.Logf("block list:\n%s", blocks)
	wantHeader(t, blocks, "POOL INDEX PREFIXES NODE SINCE ADDRESSES IN USE")
	want := []string{
		"default {c1#} {c1/} n1 2030-01-02T03:04:05Z 2",
		"default {c3#} {c3/} n2 2030-01-02T03:04:05Z 1",
		"dual {c4#} {c4/},{c46/} n2 2030-01-02T03:04:05Z 1",
	}
	if e.c1.Block > e.c3.Block {
		want[0], want[1] = want[1], want[0]
	}
	if n := len(lines(blocks)); n != 4 {
		t.Fatalf("block list has %d lines, want 4", n)
	}
	for i, row := range want {
		if w, got := e.subst(row), strings.Join(lines(blocks)[i+1], " "); got != w {
			t.Errorf("block row %d = %q, want %q", i, got, w)
		}
	}
	if out := e.ok("block", "list", "--node", "n2", "--pool", "dual"); len(lines(out)) != 2 {
		t.Fatalf("block list --node n2 --pool dual:\n%s", out)
	}

	nodes := e.ok("node", "list")
	t.Logf("node list:\n%s", nodes)
	wantHeader(t, nodes, "NODE REGISTERED LEASE ALIVE BLOCKS ADDRESSES RETIRED LABELS")
	n1 := row(t, nodes, "n1")
	if n1[1] != "2030-01-02T03:04:05Z" || n1[2] == "-" || strings.Join(n1[3:], " ") != "yes 1 2 no -" {
		t.Fatalf("n1 row = %q", n1)
	}
	if got := strings.Join(row(t, nodes, "n2")[3:], " "); got != "yes 2 2 no -" {
		t.Fatalf("n2 row = %q", got)
	}
}

// node list shows the labels each node's coild last recorded (NodeLabelsSet), sorted,
// in the table and as a map in JSON; "-" and no key for a node that recorded none.
func TestNodeListLabels(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "default", "10.0.0.0/24", "--block-size-bits", "4") // raises the level (block streams)
	n1, _ := e.startNode("n1")
	e.startNode("n2")
	if _, err := n1.SetLabels(t.Context(), map[string]string{"zone": "a", "rack": "r1"}); err != nil {
		t.Fatal(err)
	}
	nodes := e.ok("node", "list")
	if got := row(t, nodes, "n1"); got[len(got)-1] != "rack=r1,zone=a" {
		t.Errorf("n1 row = %q, want labels rack=r1,zone=a last\n%s", got, nodes)
	}
	if got := row(t, nodes, "n2"); got[len(got)-1] != "-" {
		t.Errorf("n2 row = %q, want labels - last", got)
	}
	var views []map[string]any
	if err := json.Unmarshal([]byte(e.ok("node", "list", "-o", "json")), &views); err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		lbls, has := v["labels"]
		switch v["node"] {
		case "n1":
			if m, ok := lbls.(map[string]any); !ok || m["zone"] != "a" || m["rack"] != "r1" {
				t.Errorf("n1 JSON labels = %v", lbls)
			}
		case "n2":
			if has {
				t.Errorf("n2 JSON has labels %v, want none", lbls)
			}
		}
	}
}

func TestNodeReclaim(t *testing.T) {
	e := cluster2(t)
	// n1's lease lives: refused, nothing changes.
	e.fails(4, []string{"node", "reclaim", "n1", "--yes"}, `node "n1" still holds its lease`)
	if out := e.ok("address", "list", "--node", "n1"); len(lines(out)) != 3 {
		t.Fatalf("addresses of n1 after a refused reclaim:\n%s", out)
	}
	e.fails(3, []string{"node", "reclaim", "nope", "--yes"}, `node "nope" not found`)
	e.fails(2, []string{"node", "reclaim"}, "takes one NODE")

	e.kill1()
	out := e.ok("node", "reclaim", "n1", "--reason", "decommissioned", "--yes")
	if out != "node \"n1\" reclaimed: 2 addresses released, 1 blocks reclaimed (default: 1)\n" {
		t.Fatalf("reclaim said %q", out)
	}
	nodes := e.ok("node", "list")
	if got := strings.Join(row(t, nodes, "n1"), " "); got != "n1 2030-01-02T03:04:05Z - no 0 0 yes -" {
		t.Fatalf("n1 after reclaim = %q\n%s", got, nodes)
	}
	if out := e.ok("block", "list", "--node", "n1"); len(lines(out)) != 1 {
		t.Fatalf("n1 still has blocks:\n%s", out)
	}
	// Idempotent.
	var res map[string]any
	if err := json.Unmarshal([]byte(e.ok("node", "reclaim", "n1", "-o", "json", "-y")), &res); err != nil || res["addressesReleased"] != 0.0 {
		t.Fatalf("second reclaim = %v, %v", res, err)
	}
	evs := e.ok("events", "--type", "BlockReclaimed,NodeRetired")
	t.Logf("events:\n%s", evs)
	if !strings.Contains(evs, e.subst("block {c1#} ({c1/}) reclaimed from n1: decommissioned")) ||
		!strings.Contains(evs, "node n1 retired: decommissioned") || !strings.Contains(evs, "coilctl:tester") {
		t.Fatalf("reclaim events:\n%s", evs)
	}
}

func TestUnreachable(t *testing.T) {
	sock := "unix://" + filepath.Join(t.TempDir(), "no-etcd.sock")
	for _, args := range [][]string{
		{"pool", "list"},
		{"pool", "create", "p", "10.0.0.0/16"},
		{"events"},
		{"node", "reclaim", "n1", "--yes"},
	} {
		all := append([]string{"--etcd-endpoints", sock, "--timeout", "1s"}, args...)
		start := time.Now()
		r := runArgs(t, all...)
		took := time.Since(start)
		checkFail(t, r, 5, all, "etcd at "+sock+" is unreachable after 1s: is etcd running? check --etcd-endpoints")
		if took > 30*time.Second { // bounded, with a generous margin: not a speed test
			t.Errorf("coilctl %v took %v with --timeout 1s", args, took)
		}
	}
	checkFail(t, runArgs(t, "--etcd-endpoints", "127.0.0.1:2379", "pool", "list"), 2,
		nil, `"127.0.0.1:2379": want a URL like http://127.0.0.1:2379`)
	checkFail(t, runArgs(t, "--timeout", "0s", "pool", "list"), 2, nil, "--timeout 0s: must be positive")
	checkFail(t, runArgs(t, "--etcd-cert", "/nonexistent.pem", "--etcd-endpoints", sock, "pool", "list"), 2, nil, "give both or neither")
}

// An etcd that stops after coilctl connected is reported as unreachable too (exit 5).
func TestStoppedEtcd(t *testing.T) {
	e := newEnv(t)
	e.etcd.Stop()
	r := runArgs(t, "--etcd-endpoints", e.etcd.Endpoints()[0], "--timeout", "1s", "pool", "list")
	checkFail(t, r, 5, nil, "is unreachable after 1s")
}
