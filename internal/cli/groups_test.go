package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Node selectors from the command line: create --node-selector (canonical form
// recorded), set-node-selector (” = every node), refusals that write nothing.
func TestPoolNodeSelector(t *testing.T) {
	e := newEnv(t)
	out := e.ok("pool", "create", "zone-a", "10.0.0.0/24", "--node-selector", "zone = a, rack in (r2,r1)")
	if !strings.HasPrefix(out, `pool "zone-a" created: 10.0.0.0/24`) {
		t.Fatalf("create said %q", out)
	}
	if show := e.ok("pool", "show", "zone-a"); !strings.Contains(show, "Node selector:     rack in (r1,r2),zone=a\n") || !strings.Contains(show, "State:             enabled\n") {
		t.Fatalf("pool show:\n%s", show)
	}
	e.ok("pool", "create", "all", "10.1.0.0/24", "--node-selector", "")
	if show := e.ok("pool", "show", "all"); !strings.Contains(show, "Node selector:     (every node)") {
		t.Fatalf("pool show of a pool without selector:\n%s", show)
	}
	if out := e.ok("pool", "set-node-selector", "all", "gpu"); !strings.HasPrefix(out, `pool "all" node selector set to "gpu": `) {
		t.Fatalf("set-node-selector said %q", out)
	}
	if out := e.ok("pool", "set-node-selector", "all", "gpu"); !strings.HasPrefix(out, `pool "all" node selector set to "gpu" (unchanged): `) {
		t.Fatalf("set-node-selector again said %q", out)
	}
	if out := e.ok("pool", "set-node-selector", "all", ""); !strings.HasPrefix(out, `pool "all" usable by every node: `) {
		t.Fatalf("set-node-selector '' said %q", out)
	}
	var v struct {
		NodeSelector string `json:"nodeSelector"`
	}
	if err := json.Unmarshal([]byte(e.ok("pool", "show", "zone-a", "-o", "json")), &v); err != nil || v.NodeSelector != "rack in (r1,r2),zone=a" {
		t.Fatalf("pool show -o json: %+v %v", v, err)
	}
	before := e.ok("events", "-o", "json")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pool", "create", "p", "10.9.0.0/24", "--node-selector", "zone in a"}, 2, `node selector "zone in a": `},
		{[]string{"pool", "create", "p", "10.9.0.0/24", "--node-selector", "zone=a b"}, 2, `node selector "zone=a b": `},
		{[]string{"pool", "set-node-selector", "zone-a", "zone in (a"}, 2, `node selector "zone in (a": `},
		{[]string{"pool", "set-node-selector", "nope", "zone=a"}, 3, `pool "nope" not found`},
		{[]string{"pool", "set-node-selector", "zone-a"}, 2, "takes NAME and one SELECTOR ('' for every node) (got 1 arguments)"},
		{[]string{"pool", "set-node-selector", "Bad_Name", "zone=a"}, 2, `name "Bad_Name" is invalid`},
	} {
		e.fails(tc.code, tc.args, tc.want)
	}
	if after := e.ok("events", "-o", "json"); after != before {
		t.Fatalf("refused commands wrote events:\n%s", after[len(before):])
	}
	evs := e.ok("events", "--type", "PoolNodeSelectorSet")
	wantContains(t, "events", evs, "pool zone-a: only nodes matching rack in (r1,r2),zone=a", "pool all: only nodes matching gpu", "pool all: every node may use it")
}

// Pool lifecycle from the command line: disable (reason recorded, shown), pool show
// says how many addresses remain and where, delete succeeds once the pool is empty.
func TestPoolDisableEnable(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "old", "10.0.0.0/24", "--block-size-bits", "4")
	n, _ := e.startNode("n1")
	e.alloc(n, "c1", "old", "p1")
	e.alloc(n, "c2", "old", "p2")
	if out := e.ok("pool", "disable", "old", "--reason", "moving to new"); !strings.HasPrefix(out, `pool "old" disabled: `) {
		t.Fatalf("disable said %q", out)
	}
	if out := e.ok("pool", "disable", "old"); !strings.HasPrefix(out, `pool "old" already disabled: `) {
		t.Fatalf("disable again said %q", out)
	}
	show := e.ok("pool", "show", "old")
	wantContains(t, "pool show", show, "State:             disabled (moving to new)\n", "Remaining:         2 addresses on n1 (2)\n")
	var v struct {
		Disabled       bool   `json:"disabled"`
		DisabledReason string `json:"disabledReason"`
		AddressesInUse int    `json:"addressesInUse"`
	}
	if err := json.Unmarshal([]byte(e.ok("pool", "show", "old", "-o", "json")), &v); err != nil || !v.Disabled || v.DisabledReason != "moving to new" || v.AddressesInUse != 2 {
		t.Fatalf("pool show -o json: %+v %v", v, err)
	}
	e.fails(4, []string{"pool", "delete", "old", "--yes"}, `pool "old": 1 blocks are in use (n1: 1)`, "at once when the pool is disabled")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"pool", "disable", "nope"}, 3, `pool "nope" not found`},
		{[]string{"pool", "enable", "nope"}, 3, `pool "nope" not found`},
		{[]string{"pool", "disable"}, 2, "takes one pool NAME"},
		{[]string{"pool", "enable", "a", "b"}, 2, "takes one pool NAME"},
	} {
		e.fails(tc.code, tc.args, tc.want)
	}
	// The pods leave; the node gives the empty block back at once (coild does on its
	// next reconcile pass); the pool can go.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"c1", "c2"} {
		if _, err := n.Release(ctx, id, "eth0", "pod deleted"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := n.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if k, err := n.ReleaseEmptyBlocks(ctx, time.Hour); err != nil || k != 1 {
		t.Fatalf("ReleaseEmptyBlocks = %d, %v", k, err)
	}
	if show := e.ok("pool", "show", "old"); !strings.Contains(show, "Remaining:         nothing: the pool may be deleted (coilctl pool delete old)") {
		t.Fatalf("pool show of an empty disabled pool:\n%s", show)
	}
	if out := e.ok("pool", "enable", "old"); !strings.HasPrefix(out, `pool "old" enabled: `) {
		t.Fatalf("enable said %q", out)
	}
	if out := e.ok("pool", "enable", "old"); !strings.HasPrefix(out, `pool "old" already enabled: `) {
		t.Fatalf("enable again said %q", out)
	}
	e.ok("pool", "disable", "old")
	if out := e.ok("pool", "delete", "old", "--yes"); out != "pool \"old\" deleted\n" {
		t.Fatalf("delete said %q", out)
	}
	evs := e.ok("events", "--stream", "cluster")
	wantContains(t, "events", evs, "pool old disabled: moving to new", "pool old enabled", "pool old deleted")
}

// The new types in diff, state and across log export/import: a selector change, a
// disable and a node's labels show in diff; the state after import hashes and reads the
// same.
func TestPoolSettingsInDiffAndExport(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "p", "10.0.0.0/24", "--block-size-bits", "4")
	n, kill := e.startNode("n1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.ok("cluster", "version", "raise")
	before := e.rev()
	e.ok("pool", "set-node-selector", "p", "zone=a")
	e.ok("pool", "disable", "p", "--reason", "r")
	if _, _, err := n.Load(ctx); err != nil { // no watch here: read the raise
		t.Fatal(err)
	}
	if _, err := n.SetLabels(ctx, map[string]string{"zone": "a"}); err != nil {
		t.Fatal(err)
	}
	after := e.rev()
	d := e.ok("diff", before, after)
	wantContains(t, "diff", d, "~ pool    p        node selector (every node) -> zone=a", "~ pool    p        enabled -> disabled", "~ labels  node n1  (none) -> zone=a")
	if d := e.ok("diff", before, after, "-o", "json"); !strings.Contains(d, `"setting": "nodeSelector"`) || !strings.Contains(d, `"nodeLabels": [`) {
		t.Errorf("diff -o json:\n%s", d)
	}
	st := e.ok("state", "--revision", after, "-o", "json")
	if !strings.Contains(st, `"nodeSelector": "zone=a"`) || !strings.Contains(st, `"disabled": true`) {
		t.Errorf("state --revision lacks the pool's settings:\n%s", st)
	}
	// The table says it too; pool create skipped the network and broadcast addresses.
	if st := e.ok("state", "--revision", after); !strings.Contains(st, "disabled; nodes: zone=a; skips network/broadcast") {
		t.Errorf("state --revision (table) lacks the pool's settings:\n%s", st)
	}
	exp := e.exportTo("export.jsonl")
	kill()
	e.ok("log", "import", "--force", "--yes", exp)
	if got := e.ok("pool", "show", "p", "-o", "json"); !strings.Contains(got, `"nodeSelector": "zone=a"`) || !strings.Contains(got, `"disabledReason": "r"`) {
		t.Errorf("state after import:\n%s", got)
	}
	if evs := e.ok("events", "--type", "NodeLabelsSet"); !strings.Contains(evs, "node n1 labels: zone=a") {
		t.Errorf("events after import:\n%s", evs)
	}
}
