package projection_test

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// TestFirstFreeHint: the pool state's free-block hint never passes a free index, follows
// blocks taken from the bottom, drops on a release below it, and is neither encoded nor
// hashed (a state loaded from a snapshot starts at 0 and hashes the same).
func TestFirstFreeHint(t *testing.T) {
	b := projection.NewBlocks()
	ch := &chain{stream: events.PoolStream("p")}
	for i := range uint64(5) {
		mustApply(t, b.Apply, ch.next(t, &events.BlockAssigned{Index: i, Node: "n1"}))
	}
	if h := b.FirstFreeHint(); h != 5 {
		t.Fatalf("hint after blocks 0-4: %d, want 5", h)
	}
	mustApply(t, b.Apply, ch.next(t, &events.BlockAssigned{Index: 6, Node: "n1"}))
	mustApply(t, b.Apply, ch.next(t, &events.BlockAssigned{Index: 5, Node: "n1"}))
	if h := b.FirstFreeHint(); h != 7 {
		t.Fatalf("hint after 6 then 5: %d, want 7 (past the owned run)", h)
	}
	mustApply(t, b.Apply, ch.next(t, &events.BlockReleased{Index: 2, Node: "n1"}))
	if h := b.FirstFreeHint(); h != 2 {
		t.Fatalf("hint after releasing 2: %d", h)
	}
	// Random takes and releases: the hint is never above the lowest free index.
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		i := r.Uint64N(64)
		var p events.Payload = &events.BlockAssigned{Index: i, Node: "n1"}
		if _, owned := b.Owners[i]; owned {
			p = &events.BlockReleased{Index: i, Node: "n1"}
		}
		mustApply(t, b.Apply, ch.next(t, p))
		lowest := uint64(0)
		for {
			if _, owned := b.Owners[lowest]; !owned {
				break
			}
			lowest++
		}
		if h := b.FirstFreeHint(); h > lowest {
			t.Fatalf("hint %d above the lowest free index %d", h, lowest)
		}
	}
	snap, err := projection.SnapshotOf(b)
	if err != nil {
		t.Fatal(err)
	}
	loaded := projection.NewBlocks()
	mustApply(t, loaded.Apply, ch.next(t, snap))
	if loaded.FirstFreeHint() != 0 {
		t.Fatalf("loaded hint %d", loaded.FirstFreeHint())
	}
	if len(loaded.Owners) != len(b.Owners) || strings.Contains(string(snap.State), "free") {
		t.Fatalf("snapshot %s", snap.State)
	}
}

// TestWideGeometry: blocks of a /48 with blocks of 8 bits past 2^64 addresses from the
// subnet's start (index times block size overflows 64 bits), located back exactly; a
// subnet numbers at most 2^58 blocks and the addresses beyond are in no block.
func TestWideGeometry(t *testing.T) {
	p := &projection.Pool{Name: "w", BlockSizeBits: 8, Subnets: []events.Subnet{{IPv6: netip.MustParsePrefix("fd00:c011::/48")}}}
	if n := p.NumBlocks(); n != projection.MaxBlocksPerSubnet {
		t.Fatalf("NumBlocks = %d, want 2^58", n)
	}
	for _, tc := range []struct {
		idx   uint64
		block string
	}{
		{0, "fd00:c011::/120"},
		{1, "fd00:c011::100/120"},
		{1<<58 - 1, "fd00:c011:0:3:ffff:ffff:ffff:ff00/120"},
		{1<<56 - 1, "fd00:c011::ffff:ffff:ffff:ff00/120"},
		{1 << 56, "fd00:c011:0:1::/120"},
		{1 << 26, "fd00:c011::4:0:0/120"},
	} {
		ps, ok := p.Block(tc.idx)
		if !ok || len(ps) != 1 || ps[0].String() != tc.block {
			t.Errorf("Block(%d) = %v, %v; want %s", tc.idx, ps, ok, tc.block)
			continue
		}
		a := projection.AddrAt(ps[0], 255)
		if idx, off, ok := p.Locate(a); !ok || idx != tc.idx || off != 255 {
			t.Errorf("Locate(%s) = %d, %d, %v; want %d, 255", a, idx, off, ok, tc.idx)
		}
	}
	if _, ok := p.Block(1 << 58); ok {
		t.Error("block 2^58 exists")
	}
	if _, _, ok := p.Locate(netip.MustParseAddr("fd00:c011:0:4::")); ok {
		t.Error("an address beyond the numbered blocks located")
	}
	// Two wide subnets: the second's blocks follow the first's 2^58.
	p.Subnets = append(p.Subnets, events.Subnet{IPv6: netip.MustParsePrefix("fd00:c012::/48")})
	if ps, ok := p.Block(1 << 58); !ok || ps[0].String() != "fd00:c012::/120" {
		t.Fatalf("first block of the second subnet: %v %v", ps, ok)
	}
	if idx, _, ok := p.Locate(netip.MustParseAddr("fd00:c012::141")); !ok || idx != 1<<58+1 {
		t.Fatalf("Locate in the second subnet: %d %v", idx, ok)
	}
}
