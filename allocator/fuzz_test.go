package allocator_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// FuzzPoolGeometry: ParseSubnet never panics and refuses with ErrInvalidPool; a pool
// that ValidatePool accepts has blocks that lie in its subnet, and every address of a
// block locates back to that block and offset. Pools the fold accepts without validation
// (logs written before a rule, or by anyone with etcd access) never panic the geometry.
func FuzzPoolGeometry(f *testing.F) {
	for _, s := range []string{
		"10.0.0.0/16", "fd00::/112", "10.1.0.0/24,fd01::/120", "10.0.0.0/8", "0.0.0.0/0", "::/0",
		"10.0.0.1/24", "::ffff:10.0.0.0/120", "fe80::%eth0/64", "10.0.0.0/16,10.1.0.0/16", "a,b,c", " 10.0.0.0/24 ",
	} {
		f.Add(s, uint8(5), uint64(3), uint64(7))
	}
	f.Add("10.0.0.0/30", uint8(40), uint64(1<<31), uint64(1<<63))
	f.Add("fd00:c011::/48", uint8(8), uint64(1<<55+12345), uint64(200))
	f.Add("fd00:c011::/48", uint8(6), uint64(1<<58-1), uint64(63))
	f.Add("10.0.0.0/16,fd00:c011::/64", uint8(8), uint64(255), uint64(9))
	f.Fuzz(func(t *testing.T, s string, bits uint8, idx uint64, off uint64) {
		sub, err := allocator.ParseSubnet(s)
		if err != nil {
			if !errors.Is(err, allocator.ErrInvalidPool) {
				t.Fatalf("ParseSubnet(%q): %v", s, err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("message of %d bytes: %.300q", len(err.Error()), err)
			}
			return
		}
		for _, p := range []netip.Prefix{sub.IPv4, sub.IPv6} {
			if p.IsValid() && (p.Masked() != p || p.Addr().Zone() != "" || p.Addr().Is4In6()) {
				t.Fatalf("ParseSubnet(%q) = %v", s, sub)
			}
		}
		if !sub.IPv4.IsValid() && !sub.IPv6.IsValid() {
			t.Fatalf("ParseSubnet(%q) returned no network", s)
		}
		pool := &projection.Pool{Name: "p", BlockSizeBits: bits, Subnets: []events.Subnet{sub}}
		// Whatever the fold holds: no panic.
		n := pool.NumBlocks()
		_, _ = pool.Block(idx)
		_, _ = pool.Addrs(idx, off)
		for _, p := range []netip.Prefix{sub.IPv4, sub.IPv6} {
			if p.IsValid() {
				_, _, _ = pool.Locate(p.Addr())
			}
		}
		verr := allocator.ValidatePool(&events.PoolCreated{Name: "p", BlockSizeBits: bits, Subnets: []events.Subnet{sub}}, nil)
		if verr != nil {
			if !errors.Is(verr, allocator.ErrInvalidPool) {
				t.Fatalf("ValidatePool(%q, %d): %v", s, bits, verr)
			}
			return
		}
		if n == 0 || n > projection.MaxBlocksPerSubnet || n > projection.MaxBlocksPerPool {
			t.Fatalf("%q/%d: a valid pool with %d blocks", s, bits, n)
		}
		size := pool.BlockSize()
		for _, i := range []uint64{0, idx % n, n - 1} {
			prefixes, ok := pool.Block(i)
			if !ok || len(prefixes) == 0 {
				t.Fatalf("%q/%d: block %d of %d missing", s, bits, i, n)
			}
			for _, bp := range prefixes {
				if bp.Addr().BitLen()-bp.Bits() != int(bits) || (!sub.IPv4.Contains(bp.Addr()) && !sub.IPv6.Contains(bp.Addr())) {
					t.Fatalf("%q/%d: block %d is %s", s, bits, i, bp)
				}
			}
			o := off % size
			addrs, ok := pool.Addrs(i, o)
			if !ok || len(addrs) != len(prefixes) {
				t.Fatalf("%q/%d: addresses of block %d offset %d: %v", s, bits, i, o, addrs)
			}
			for k, a := range addrs {
				if !prefixes[k].Contains(a) {
					t.Fatalf("%q/%d: %s not in block %s", s, bits, a, prefixes[k])
				}
				if gi, gotOff, ok := pool.Locate(a); !ok || gi != i || gotOff != o {
					t.Fatalf("%q/%d: Locate(%s) = %d, %d, %v; want %d, %d", s, bits, a, gi, gotOff, ok, i, o)
				}
			}
		}
		if _, ok := pool.Block(n); ok {
			t.Fatalf("%q/%d: block %d of %d exists", s, bits, n, n)
		}
		if strings.Contains(s, "%") {
			t.Fatalf("%q: a zone was accepted", s)
		}
	})
}
