package allocator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
)

func TestParseNodeSelector(t *testing.T) {
	for in, want := range map[string]string{
		"":                                    "",
		"   ":                                 "",
		"zone=a":                              "zone=a",
		"zone = a, rack in (r2,r1)":           "rack in (r1,r2),zone=a",
		"!gpu,topology.kubernetes.io/zone!=b": "!gpu,topology.kubernetes.io/zone!=b",
	} {
		got, err := allocator.ParseNodeSelector(in)
		if err != nil || got != want {
			t.Errorf("ParseNodeSelector(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"zone in a":                  `node selector "zone in a": `,
		"zone in (a":                 `node selector "zone in (a": `,
		"-bad-key-=x":                `node selector "-bad-key-=x": `,
		"zone=a b":                   `node selector "zone=a b": `,
		strings.Repeat("k=v,", 1100): "node selector of 4400 bytes: at most 4096",
	} {
		_, err := allocator.ParseNodeSelector(in)
		if !errors.Is(err, allocator.ErrInvalidSelector) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseNodeSelector(%.20q) = %v; want ErrInvalidSelector with %q", in, err, want)
		}
	}
}

func TestParseNodeLabels(t *testing.T) {
	got, err := allocator.ParseNodeLabels(" zone=a,rack=r1,empty=")
	if err != nil || len(got) != 3 || got["zone"] != "a" || got["rack"] != "r1" || got["empty"] != "" {
		t.Fatalf("ParseNodeLabels = %v, %v", got, err)
	}
	if got, err := allocator.ParseNodeLabels(""); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v, %v", got, err)
	}
	for in, want := range map[string]string{
		"zone":          `node label "zone": want KEY=VALUE`,
		"=a":            `node label "=a": want KEY=VALUE`,
		"zone=a,zone=b": `node label "zone" given twice`,
		"bad key=a":     `node labels "bad key=a": `,
		"zone=a/b":      `node labels "zone=a/b": `,
	} {
		_, err := allocator.ParseNodeLabels(in)
		if !errors.Is(err, allocator.ErrInvalidSelector) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseNodeLabels(%q) = %v; want ErrInvalidSelector with %q", in, err, want)
		}
	}
	if s := allocator.FormatLabels(map[string]string{"b": "2", "a": "1"}); s != "a=1,b=2" {
		t.Errorf("FormatLabels = %q", s)
	}
}

// A node takes addresses only from pools whose node selector matches the labels it
// recorded; the refusal names the pool, the node, the selector and the labels.
func TestNodeSelector(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.pool("all", 2, "10.1.0.0/24")
	if err := e.admin.CreatePool(ctx, pool(t, "zone-a", 2, "10.2.0.0/24"), append(e.poolOpts, allocator.WithNodeSelector("zone=a"))...); err != nil {
		t.Fatal(err)
	}
	n1, n2 := e.node("n1", nil), e.node("n2", nil)
	if ok, err := n1.SetLabels(ctx, map[string]string{"zone": "a"}); err != nil || !ok {
		t.Fatalf("SetLabels n1: %v %v", ok, err)
	}
	if ok, err := n1.SetLabels(ctx, map[string]string{"zone": "a"}); err != nil || ok {
		t.Fatalf("SetLabels n1 again: appended %v, %v", ok, err)
	}
	if _, err := n2.SetLabels(ctx, map[string]string{"zone": "b", "kubernetes.io/hostname": "n2"}); err != nil {
		t.Fatal(err)
	}
	if a := alloc(t, n1, "c1", "zone-a"); a.Pool != "zone-a" {
		t.Fatalf("n1 got %+v", a)
	}
	alloc(t, n2, "c2", "all") // a pool without selector: every node
	_, err := n2.Allocate(ctx, allocator.Request{ContainerID: "c3", IfName: "eth0", Pool: "zone-a", Fallbacks: []string{"all"}})
	want := `pool "zone-a" may not be used on node "n2": its node selector "zone=a" does not match the node's labels kubernetes.io/hostname=n2,zone=b; choose another pool`
	if !errors.Is(err, allocator.ErrNodeNotSelected) || !strings.Contains(err.Error(), want) {
		t.Fatalf("n2 in zone-a: %v; want %q (and no fallback: fallbacks serve disabled pools only)", err, want)
	}
	if len(n2.Blocks()) != 1 {
		t.Fatalf("n2 took a block of a pool that does not select it: %v", n2.Blocks())
	}
	// Everything on: '' selects every node. The node reads the change from the log.
	if ok, err := e.admin.SetNodeSelector(ctx, "zone-a", ""); err != nil || !ok {
		t.Fatalf("SetNodeSelector: %v %v", ok, err)
	}
	if ok, err := e.admin.SetNodeSelector(ctx, "zone-a", ""); err != nil || ok {
		t.Fatalf("SetNodeSelector again: appended %v, %v", ok, err)
	}
	if _, _, err := n2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	alloc(t, n2, "c3", "zone-a")
	// Labels changed: a node that no longer matches keeps its address, takes no new one,
	// and gives its empty blocks back at once.
	if _, err := e.admin.SetNodeSelector(ctx, "zone-a", "zone=a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if a := alloc(t, n2, "c3", "zone-a"); a.Pool != "zone-a" {
		t.Fatalf("repeated ADD: %+v", a)
	}
	if _, err := n2.Allocate(ctx, allocator.Request{ContainerID: "c4", IfName: "eth0", Pool: "zone-a"}); !errors.Is(err, allocator.ErrNodeNotSelected) {
		t.Fatalf("n2 after the selector changed back: %v", err)
	}
	if _, err := n2.Release(ctx, "c3", "eth0", "test"); err != nil {
		t.Fatal(err)
	}
	if got, err := n2.ReleaseEmptyBlocks(ctx, time.Hour); err != nil || got != 1 {
		t.Fatalf("released %d (%v) empty blocks of a pool that does not select n2, want 1", got, err)
	}
	if got := n2.Labels(); got["zone"] != "b" {
		t.Fatalf("Labels = %v", got)
	}
	// Refusals: an unknown pool; a selector that does not parse is refused by
	// ParseNodeSelector before any write (TestParseNodeSelector).
	if _, err := e.admin.SetNodeSelector(ctx, "nope", "zone=a"); !errors.Is(err, allocator.ErrPoolNotFound) {
		t.Fatalf("unknown pool: %v", err)
	}
}

// Node labels and selectors are level-1 features: below it a node records no labels.
func TestNodeLabelsNeedLevel(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.poolOpts = []allocator.PoolOption{allocator.LegacyLayout()}
	e.pool("default", 2, "10.1.0.0/24")
	n := e.node("n1", nil)
	if _, err := n.SetLabels(ctx, map[string]string{"zone": "a"}); !errors.Is(err, allocator.ErrLevel) {
		t.Fatalf("SetLabels at level 0: %v", err)
	}
	if n.Labels() != nil {
		t.Fatalf("labels recorded at level 0: %v", n.Labels())
	}
}

// A disabled pool hands out nothing new; existing assignments stay; a request falls
// through to its fallbacks; empty blocks go back at once; the pool can then be deleted.
func TestPoolDisable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.pool("old", 2, "10.1.0.0/24")
	e.pool("new", 2, "10.2.0.0/24")
	n := e.node("n1", nil)
	c1 := alloc(t, n, "c1", "old")
	if ok, err := e.admin.DisablePool(ctx, "old", "moving to new"); err != nil || !ok {
		t.Fatalf("DisablePool: %v %v", ok, err)
	}
	if ok, err := e.admin.DisablePool(ctx, "old", "again"); err != nil || ok {
		t.Fatalf("DisablePool again: appended %v, %v", ok, err)
	}
	if _, _, err := n.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if a := alloc(t, n, "c1", "old"); a.Addrs[0] != c1.Addrs[0] {
		t.Fatalf("repeated ADD of an existing assignment: %v, had %v", a.Addrs, c1.Addrs)
	}
	_, err := n.Allocate(ctx, allocator.Request{ContainerID: "c2", IfName: "eth0", Pool: "old"})
	want := `pool "old" is disabled: reason: moving to new; it hands out no new address; ` + "`coilctl pool enable old`"
	if !errors.Is(err, allocator.ErrPoolDisabled) || !strings.Contains(err.Error(), want) {
		t.Fatalf("ADD in a disabled pool: %v; want %q", err, want)
	}
	_, err = n.Allocate(ctx, allocator.Request{ContainerID: "c2", IfName: "eth0", Pool: "old", Fallbacks: []string{"gone", "old"}})
	if !errors.Is(err, allocator.ErrPoolDisabled) || !strings.Contains(err.Error(), "no pool configured after it (gone, old) is enabled") {
		t.Fatalf("ADD with no usable fallback: %v", err)
	}
	a, err := n.Allocate(ctx, allocator.Request{ContainerID: "c2", IfName: "eth0", Pool: "old", Fallbacks: []string{"gone", "new"}})
	if err != nil || a.Pool != "new" {
		t.Fatalf("fallback: %+v, %v", a, err)
	}
	if err := e.admin.DeletePool(ctx, "old"); !errors.Is(err, allocator.ErrPoolInUse) {
		t.Fatalf("delete of a disabled pool in use: %v", err)
	}
	if _, err := n.Release(ctx, "c1", "eth0", "moved"); err != nil {
		t.Fatal(err)
	}
	if got, err := n.ReleaseEmptyBlocks(ctx, time.Hour); err != nil || got != 1 {
		t.Fatalf("released %d (%v) empty blocks of a disabled pool, want 1 at once", got, err)
	}
	// Enable, disable and delete.
	if ok, err := e.admin.EnablePool(ctx, "old"); err != nil || !ok {
		t.Fatalf("EnablePool: %v %v", ok, err)
	}
	if ok, err := e.admin.EnablePool(ctx, "old"); err != nil || ok {
		t.Fatalf("EnablePool again: appended %v, %v", ok, err)
	}
	if _, _, err := n.Load(ctx); err != nil {
		t.Fatal(err)
	}
	alloc(t, n, "c3", "old")
	if _, err := n.Release(ctx, "c3", "eth0", "moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.DisablePool(ctx, "old", ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ReleaseEmptyBlocks(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.DeletePool(ctx, "old"); err != nil {
		t.Fatalf("delete of an empty disabled pool: %v", err)
	}
	for _, f := range []func() (bool, error){
		func() (bool, error) { return e.admin.DisablePool(ctx, "nope", "") },
		func() (bool, error) { return e.admin.EnablePool(ctx, "nope") },
	} {
		if _, err := f(); !errors.Is(err, allocator.ErrPoolNotFound) {
			t.Fatalf("unknown pool: %v", err)
		}
	}
	if _, err := e.admin.DisablePool(ctx, "new", strings.Repeat("x", 1025)); !errors.Is(err, allocator.ErrInvalidPool) {
		t.Fatalf("long reason: %v", err)
	}
}
