package cli_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/coil-net/coil/events"
)

// TestPoolWideIPv6: the pools people plan for IPv6 (issue 14, item 8): a /48 with blocks
// of 8 bits (2^72 blocks, the first 2^58 numbered) and a /64 with blocks of 6 bits, both
// layouts; `pool show` lists the blocks in use, the block-stream pool's indexes pass
// 2^32, and `events --stream block/POOL/INDEX` and `history` read them.
func TestPoolWideIPv6(t *testing.T) {
	e := newEnv(t)
	out := e.ok("pool", "create", "v6", "fd00:c011::/48", "--block-size-bits", "8", "--layout", "pool-stream")
	if want := "pool \"v6\" created: fd00:c011::/48 (288230376151711744 blocks of 256 addresses, /120)\n" +
		"Note: Coil numbers the first 2^58 blocks of a subnet (fd00:c011::/48 holds 2^72); the addresses beyond them are never handed out.\n"; out != want {
		t.Fatalf("create said %q, want %q", out, want)
	}
	out = e.ok("pool", "create", "v64", "fd00:c012::/64", "--block-size-bits", "6", "--layout", "block-streams")
	if want := "pool \"v64\" created: fd00:c012::/64 (288230376151711744 blocks of 64 addresses, /122)\n"; out != want {
		t.Fatalf("create said %q, want %q", out, want)
	}
	n1, _ := e.startNode("n1")
	n2, _ := e.startNode("n2")
	for i := range 3 {
		e.alloc(n1, fmt.Sprintf("a%d", i), "v6", "web")
	}
	b := e.alloc(n2, "b0", "v6", "db")
	w := e.alloc(n2, "w0", "v64", "big")
	if w.Block < 1<<32 {
		t.Fatalf("block %d of v64: want an index past 2^32 (n2's hash start)", w.Block)
	}

	show := e.ok("pool", "show", "v6")
	wantContains(t, "pool show v6", show,
		"Blocks:            2 used, 288230376151711742 free, 288230376151711744 total",
		"Note: Coil numbers the first 2^58 blocks of a subnet (fd00:c011::/48 holds 2^72)",
		"Addresses in use:  4",
	)
	if got := strings.Join(row(t, show, "n1"), " "); got != "n1 1 3 fd00:c011::/120" {
		t.Errorf("n1 row = %q\n%s", got, show)
	}
	if got := strings.Join(row(t, show, "n2"), " "); got != "n2 1 1 "+b.BlockPrefixes[0].String() {
		t.Errorf("n2 row = %q\n%s", got, show)
	}
	var v struct {
		Blocks struct{ Used, Free, Total uint64 }
		Nodes  []struct {
			Node     string   `json:"node"`
			Prefixes []string `json:"prefixes"`
		} `json:"nodes"`
	}
	js := e.ok("pool", "show", "v64", "-o", "json")
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("pool show -o json: %v\n%s", err, js)
	}
	if v.Blocks.Used != 1 || v.Blocks.Total != 1<<58 || v.Blocks.Free != 1<<58-1 || len(v.Nodes) != 1 || v.Nodes[0].Prefixes[0] != w.BlockPrefixes[0].String() {
		t.Fatalf("pool show v64 -o json = %+v\n%s", v, js)
	}
	if strings.Contains(e.ok("pool", "show", "v64"), "Note:") {
		t.Error("a /64 with blocks of 6 bits is numbered whole: no note")
	}
	stream := string(events.BlockStream("v64", w.Block))
	evs := e.ok("events", "--stream", stream)
	if !strings.Contains(evs, "BlockAssigned") || !strings.Contains(evs, fmt.Sprint(w.Block)) {
		t.Fatalf("events --stream %s:\n%s", stream, evs)
	}
	if h := e.ok("history", w.Addrs[0].String()); !strings.Contains(h, "ns/big") {
		t.Fatalf("history %s:\n%s", w.Addrs[0], h)
	}
}

// TestPoolWideRefused: a pool numbers at most 2^63 blocks: 32 subnets of 2^58 blocks fill
// it, a 33rd is refused (exit 2) and nothing is written.
func TestPoolWideRefused(t *testing.T) {
	e := newEnv(t)
	args := []string{"pool", "create", "huge", "--block-size-bits", "8"}
	for i := range 33 {
		args = append(args, fmt.Sprintf("fd00:%x::/48", 0x100+i))
	}
	e.fails(2, args, `pool "huge": subnet fd00:120::/48 would take the pool past 9223372036854775808 blocks (2^63; Coil numbers up to 2^58 blocks of each subnet): use another pool`)
	if out := e.ok("pool", "list", "-o", "json"); strings.Contains(out, "huge") {
		t.Fatalf("refused pool listed:\n%s", out)
	}
	e.ok(args[:len(args)-1]...)
	e.fails(2, []string{"pool", "add-subnet", "huge", "fd00:120::/48"}, "would take the pool past 9223372036854775808 blocks")
}
