package cli_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
)

func TestPoolLifecycle(t *testing.T) {
	e := newEnv(t)
	out := e.ok("pool", "create", "default", "10.0.0.0/16")
	if want := "pool \"default\" created: 10.0.0.0/16 (2048 blocks of 32 addresses, /27)\n"; out != want {
		t.Fatalf("create said %q, want %q", out, want)
	}
	e.ok("pool", "create", "dual", "10.1.0.0/24,fd00:1::/120", "--block-size-bits", "4")
	if out := e.ok("pool", "add-subnet", "default", "10.2.0.0/24"); out != "pool \"default\" extended: 10.0.0.0/16 10.2.0.0/24 (2056 blocks of 32 addresses, /27)\n" {
		t.Fatalf("add-subnet said %q", out)
	}

	list := e.ok("pool", "list")
	wantHeader(t, list, "NAME SUBNETS BLOCK SIZE BLOCKS USED/TOTAL ADDRESSES IN USE SETTINGS")
	if got := strings.Join(row(t, list, "default"), " "); got != "default 10.0.0.0/16 10.2.0.0/24 32 (/27) 0/2056 0 skips network/broadcast" {
		t.Fatalf("default row = %q\n%s", got, list)
	}
	if got := strings.Join(row(t, list, "dual"), " "); got != "dual 10.1.0.0/24,fd00:1::/120 16 (/28,/124) 0/16 0 skips network/broadcast" {
		t.Fatalf("dual row = %q\n%s", got, list)
	}

	var pools []struct {
		Name          string   `json:"name"`
		Subnets       []string `json:"subnets"`
		BlockSizeBits int      `json:"blockSizeBits"`
		Blocks        struct{ Used, Free, Total int }
	}
	js := e.ok("pool", "list", "-o", "json")
	if err := json.Unmarshal([]byte(js), &pools); err != nil {
		t.Fatalf("pool list -o json: %v\n%s", err, js)
	}
	if !strings.HasPrefix(js, "[\n  {") {
		t.Fatalf("pool list -o json is not indented: %q", js[:10])
	}
	if len(pools) != 2 || pools[0].Name != "default" || pools[0].Blocks.Total != 2056 || pools[0].Blocks.Free != 2056 ||
		pools[1].Name != "dual" || pools[1].BlockSizeBits != 4 {
		t.Fatalf("pools = %+v", pools)
	}
	var y []map[string]any
	if err := yaml.Unmarshal([]byte(e.ok("pool", "list", "-o", "yaml")), &y); err != nil || len(y) != 2 || y[1]["name"] != "dual" {
		t.Fatalf("pool list -o yaml = %v, %v", y, err)
	}

	show := e.ok("pool", "show", "default")
	wantContains(t, "pool show", show, "Name:              default", "Subnets:           10.0.0.0/16 10.2.0.0/24",
		"Block size:        32 (/27), 5 bits", "Blocks:            0 used, 2056 free, 2056 total",
		"Created:           2030-01-02T03:04:05Z", "No node holds a block of this pool.",
	)

	if out := e.ok("pool", "delete", "dual", "--yes"); out != "pool \"dual\" deleted\n" {
		t.Fatalf("delete said %q", out)
	}
	if out := e.ok("pool", "list", "-o", "json"); strings.Contains(out, "dual") {
		t.Fatalf("dual still listed after delete:\n%s", out)
	}
	// The events record who did it.
	evs := e.ok("events", "--stream", "cluster", "-o", "json")
	if !strings.Contains(evs, `"actor":"coilctl:tester"`) {
		t.Fatalf("actor not recorded:\n%s", evs)
	}
}

func TestPoolBadInput(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "a", "10.0.0.0/16")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"invalid CIDR", []string{"pool", "create", "p", "10.0.0.0/33"}, 2, []string{`subnet "10.0.0.0/33" is not a CIDR`}},
		{"not an address", []string{"pool", "create", "p", "banana"}, 2, []string{`subnet "banana" is not a CIDR`}},
		{"host bits", []string{"pool", "create", "p", "10.9.0.1/16"}, 2, []string{"has host bits set: did you mean 10.9.0.0/16?"}},
		{"block size over max", []string{"pool", "create", "p", "10.9.0.0/16", "--block-size-bits", "17"}, 2,
			[]string{"--block-size-bits 17 is out of range: must be between 0 and 16"}},
		{"block size negative", []string{"pool", "create", "p", "10.9.0.0/16", "--block-size-bits", "-1"}, 2, []string{"out of range"}},
		{"block size not a number", []string{"pool", "create", "p", "10.9.0.0/16", "--block-size-bits", "x"}, 2, []string{"--block-size-bits"}},
		{"block larger than subnet", []string{"pool", "create", "p", "10.9.0.0/28", "--block-size-bits", "5"}, 2,
			[]string{"block size 5 bits is out of range for IPv4 subnet 10.9.0.0/28: must be between 0 and 4"}},
		{"overlap", []string{"pool", "create", "b", "10.0.1.0/24"}, 4, []string{`subnet 10.0.1.0/24 overlaps subnet 10.0.0.0/16 of pool "a"`}},
		{"overlap own", []string{"pool", "create", "b", "10.8.0.0/16", "10.8.1.0/24"}, 4, []string{"overlaps its own subnet"}},
		{"duplicate name", []string{"pool", "create", "a", "10.7.0.0/16"}, 4, []string{`pool "a"`, "already exists"}},
		{"invalid name", []string{"pool", "create", "Bad_Name", "10.7.0.0/16"}, 2, []string{`name "Bad_Name" is invalid`}},
		{"mixed kinds", []string{"pool", "create", "m", "10.7.0.0/16", "fd00::/112"}, 2, []string{"subnets are all of one kind"}},
		{"no subnet", []string{"pool", "create", "p"}, 2, []string{"takes NAME and at least one SUBNET"}},
		{"show unknown", []string{"pool", "show", "nope"}, 3, []string{`pool "nope" not found`}},
		{"delete unknown", []string{"pool", "delete", "nope", "-y"}, 3, []string{`pool "nope" not found`}},
		{"add-subnet unknown", []string{"pool", "add-subnet", "nope", "10.5.0.0/16"}, 3, []string{`pool "nope" not found`}},
		{"add-subnet overlap", []string{"pool", "add-subnet", "a", "10.0.3.0/24"}, 4, []string{"overlaps its own subnet 10.0.0.0/16"}},
		{"add-subnet wrong kind", []string{"pool", "add-subnet", "a", "fd00::/112"}, 2, []string{"is IPv6 but the pool is IPv4"}},
		{"add-subnet args", []string{"pool", "add-subnet", "a"}, 2, []string{"takes NAME and one SUBNET"}},
		{"show two args", []string{"pool", "show", "a", "b"}, 2, []string{"takes one pool NAME (got 2 arguments)"}},
		{"unknown subcommand", []string{"pool", "frobnicate"}, 2, []string{`unknown command "frobnicate"`}},
		{"bad output", []string{"pool", "list", "-o", "xml"}, 2, []string{`--output "xml": want table, json or yaml`}},
		{"unknown flag", []string{"pool", "list", "--frob"}, 2, []string{"unknown flag: --frob"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.run(tc.args...)
			checkFail(t, r, tc.code, tc.args, tc.want...)
		})
	}
	// Nothing of the refused commands reached the log.
	if out := e.ok("pool", "list"); len(lines(out)) != 2 {
		t.Fatalf("pools after refused commands:\n%s", out)
	}
}

func TestPoolDeleteInUse(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "busy", "10.0.0.0/24", "--block-size-bits", "4", noSkipNB)
	n, _ := e.startNode("n1")
	a := e.alloc(n, "c1", "busy", "p1")
	prefix := a.BlockPrefixes[0].String()
	e.fails(4, []string{"pool", "delete", "busy", "--yes"}, `pool "busy": 1 blocks are in use (n1: 1); delete its pods first`)
	show := e.ok("pool", "show", "busy")
	wantContains(t, "pool show", show, "Blocks:            1 used, 15 free, 16 total", "Addresses in use:  1")
	if got := strings.Join(row(t, show, "n1"), " "); got != "n1 1 1 "+prefix {
		t.Errorf("node row = %q\n%s", got, show)
	}
	var v struct {
		Nodes []struct {
			Node     string   `json:"node"`
			Blocks   int      `json:"blocks"`
			Prefixes []string `json:"prefixes"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(e.ok("pool", "show", "busy", "-o", "json")), &v); err != nil ||
		len(v.Nodes) != 1 || v.Nodes[0].Prefixes[0] != prefix {
		t.Fatalf("pool show -o json = %+v, %v", v, err)
	}
}

// A block appended directly (no node stream at all) also keeps a pool from deletion.
func TestPoolDeleteInUseRawBlock(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "raw", "10.0.0.0/24", noSkipNB)
	ctx := t.Context()
	_, err := e.log.Append(ctx, events.AppendRequest{
		Stream: events.PoolStream("raw"),
		Events: []*events.Event{{Time: t0, Actor: "test", Payload: &events.BlockAssigned{Index: 2, Node: "ghost"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.fails(4, []string{"pool", "delete", "raw", "--yes"}, "in use (ghost: 1)")
	if got := strings.Join(row(t, e.ok("block", "list"), "raw"), " "); got != "raw 2 10.0.0.64/27 ghost 2030-01-02T03:04:05Z 0" {
		t.Fatalf("block row = %q", got)
	}
}

// Issue 10: pools over ranges that break a node (a pod got the gateway 169.254.1.1 and
// routed to itself) are refused by create and add-subnet with the reason, exit 2.
func TestPoolReservedRanges(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "a", "10.0.0.0/16")
	e.ok("pool", "create", "b", "fd00:1::/112")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pool", "create", "p", "169.254.0.0/16"}, `pool "p": 169.254.0.0/16 is link-local: pods' default gateway 169.254.1.1 lives there`},
		{[]string{"pool", "create", "p", "127.0.0.0/16"}, "127.0.0.0/16 is loopback (127.0.0.0/8): packets to it never leave a host"},
		{[]string{"pool", "create", "p", "224.0.0.0/16"}, "224.0.0.0/16 is multicast (224.0.0.0/4): a pod's address must be unicast"},
		{[]string{"pool", "create", "p", "0.0.0.0/16"}, `0.0.0.0/16 is reserved for "this network" (0.0.0.0/8)`},
		{[]string{"pool", "create", "p", "255.255.255.0/24"}, "255.255.255.0/24 contains 255.255.255.255, the limited broadcast address"},
		{[]string{"pool", "create", "p", "fe80::/112"}, "fe80::/112 is link-local (fe80::/10): pods' default gateway fe80::1 lives there"},
		{[]string{"pool", "create", "p", "10.5.0.0/16,fe80::/112"}, "fe80::/112 is link-local"},
		{[]string{"pool", "add-subnet", "a", "169.254.1.0/24"}, `pool "a": 169.254.1.0/24 is link-local (169.254.0.0/16)`},
		{[]string{"pool", "add-subnet", "b", "ff02::/112"}, "ff02::/112 is multicast (ff00::/8)"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			e.fails(2, tc.args, tc.want)
		})
	}
	if out := e.ok("pool", "list"); len(lines(out)) != 3 || strings.Contains(out, " p ") {
		t.Fatalf("pools after refusals:\n%s", out)
	}
	e.ok("pool", "create", "class-e", "240.0.0.0/16") // usable: docs/coilctl.md
}

// A log that holds such a pool from before the rule still replays: listings work (with a
// warning on stderr), an export of it imports, and the pool still serves its node.
func TestPoolReservedRangeInOldLog(t *testing.T) {
	e := newEnv(t)
	_, err := e.log.Append(t.Context(), events.AppendRequest{
		Stream: events.ClusterStream,
		Events: []*events.Event{{Time: t0, Actor: "old", Payload: &events.PoolCreated{Name: "ll", BlockSizeBits: 4,
			Subnets: []events.Subnet{{IPv4: netip.MustParsePrefix("169.254.0.0/24")}}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	n, _ := e.startNode("n1")
	e.alloc(n, "c1", "ll", "p1")
	const warning = `coilctl: warning: pool "ll": 169.254.0.0/24 is link-local (169.254.0.0/16): pods' default gateway 169.254.1.1 lives there`
	r := e.run("pool", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "ll") || !strings.HasPrefix(r.stderr, warning) ||
		!strings.Contains(r.stderr, "such pools are refused now (it was defined before): move its pods to another pool and delete it") {
		t.Fatalf("pool list: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := e.run("pool", "show", "ll", "-o", "json"); r.code != 0 || !strings.HasPrefix(r.stderr, warning) {
		t.Fatalf("pool show: exit %d, stderr %q", r.code, r.stderr)
	}
	if out := e.ok("address", "list"); !strings.Contains(out, "169.254.0.0") {
		t.Fatalf("address list:\n%s", out)
	}
	exp := e.exportTo("old.jsonl")
	f := newEnv(t)
	if r := f.run("log", "import", exp); r.code != 0 || !strings.Contains(r.stdout, "imported") || !strings.HasPrefix(r.stderr, warning) {
		t.Fatalf("import of the old log: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestPoolLayoutsAndSplit: a pool in one pool stream (as before block streams) is split
// while a node uses it: its old block stays the node's, the next one is taken in a block
// stream, pool show tells the layout, history finds holders in either kind of block, a
// second split is refused, a bad --layout is a usage error.
func TestPoolLayoutsAndSplit(t *testing.T) {
	e := newEnv(t)
	e.fails(2, []string{"pool", "create", "x", "10.8.0.0/24", "--layout", "bogus"}, `--layout "bogus": want auto, block-streams or pool-stream`)
	e.ok("pool", "create", "old", "10.0.0.0/28", "--block-size-bits", "2", "--layout", "pool-stream", noSkipNB) // 4 blocks of 4
	if out := e.ok("pool", "show", "old"); !strings.Contains(out, "Layout:            pool-stream") {
		t.Fatalf("pool show:\n%s", out)
	}
	n1, _ := e.startNode("n1")
	first := e.alloc(n1, "c1", "old", "p1")
	for _, id := range []string{"c2", "c3", "c4"} {
		e.alloc(n1, id, "old", id)
	}
	if out := e.ok("pool", "split", "old"); !strings.Contains(out, `pool "old" split`) {
		t.Fatalf("pool split: %q", out)
	}
	e.fails(4, []string{"pool", "split", "old"}, `pool "old" already has block streams`)
	e.fails(3, []string{"pool", "split", "nope"}, `pool "nope" not found`)
	// n1 has not seen the split: its full legacy block sends it to a new block, which it
	// takes in the block's own stream.
	second := e.alloc(n1, "c5", "old", "p5")
	if second.Block == first.Block {
		t.Fatalf("c5 in the full block %d", first.Block)
	}
	if out := e.ok("events", "--stream", fmt.Sprintf("block/old/%d", second.Block), "-o", "json"); !strings.Contains(out, `"BlockAssigned"`) {
		t.Fatalf("no BlockAssigned in block/old/%d: %q", second.Block, out)
	}
	show := e.ok("pool", "show", "old")
	for _, want := range []string{"Layout:            block-streams", "Blocks:            2 used, 2 free, 4 total"} {
		if !strings.Contains(show, want) {
			t.Fatalf("pool show lacks %q:\n%s", want, show)
		}
	}
	if got := len(lines(e.ok("block", "list", "--pool", "old"))); got != 3 {
		t.Fatalf("block list: %d lines, want a header and 2 blocks", got)
	}
	for _, a := range []*allocator.Assignment{first, second} {
		out := e.ok("history", a.Addrs[0].String())
		if !strings.Contains(out, a.ContainerID) || !strings.Contains(out, "n1") {
			t.Fatalf("history %s:\n%s", a.Addrs[0], out)
		}
	}
}

// TestPoolCreateDefaultLayout: pool create's default layout (auto) is block streams when
// the cluster is at feature level 1 or can be raised to it; while a coild of an older
// release holds the level back, it is the pool stream (no PoolSplit, which that coild
// would stop at) with a warning that names 'coilctl pool split'. --layout pool-stream
// makes a pool-stream pool without a warning.
func TestPoolCreateDefaultLayout(t *testing.T) {
	e := newEnv(t)
	old := allocatortest.Start(t, e.cli, e.log, "n-old", allocatortest.Options{Clock: fixedClock{t0}, AliveValue: "n-old"})
	r := e.run("pool", "create", "plain", "10.0.0.0/24")
	if r.code != 0 || !strings.Contains(r.stderr, `coilctl: warning: pool "plain" records its block owners in one stream (layout pool-stream)`) ||
		!strings.Contains(r.stderr, "coilctl pool split plain") {
		t.Fatalf("pool create with an old coild live: exit %d, stderr %q", r.code, r.stderr)
	}
	if out := e.ok("pool", "show", "plain"); !strings.Contains(out, "Layout:            pool-stream") {
		t.Fatalf("pool show:\n%s", out)
	}
	if out := e.ok("events", "--type", "PoolSplit", "-o", "json"); strings.Contains(out, "PoolSplit") {
		t.Fatalf("pool create with an old coild live wrote PoolSplit: %s", out)
	}
	e.fails(4, []string{"pool", "create", "split", "10.1.0.0/24", "--layout", "block-streams"}, "a pool with block streams needs cluster feature level 1")
	old.Kill()
	e.ok("pool", "create", "split", "10.1.0.0/24")
	if out := e.ok("pool", "show", "split"); !strings.Contains(out, "Layout:            block-streams") {
		t.Fatalf("pool show:\n%s", out)
	}
	if r := e.run("pool", "create", "legacy", "10.2.0.0/24", "--layout", "pool-stream"); r.code != 0 || strings.Contains(r.stderr, "records its block owners") {
		t.Fatalf("pool create --layout pool-stream: exit %d, stderr %q", r.code, r.stderr)
	}
}
