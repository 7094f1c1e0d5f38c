package projection

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"github.com/coil-net/coil/events"
)

// MaxBlocksPerSubnet is how many blocks of one subnet Coil numbers: a subnet holding
// more (an IPv6 /48 with blocks of 8 bits holds 2^72) uses its first MaxBlocksPerSubnet
// blocks and never hands out the addresses beyond them. 2^58 is an IPv6 /64 with blocks
// of 6 bits (Calico's /122), whole; no cluster takes that many blocks. Block indexes are
// uint64, and a pool numbers at most MaxBlocksPerPool blocks, so index arithmetic never
// overflows.
const MaxBlocksPerSubnet = 1 << MaxBlockIndexBits

// MaxBlockIndexBits is log2(MaxBlocksPerSubnet).
const MaxBlockIndexBits = 58

// MaxBlocksPerPool bounds the blocks of a pool over all its subnets (validation refuses
// a subnet that would take a pool past it): 32 subnets of MaxBlocksPerSubnet blocks.
const MaxBlocksPerPool = 1 << 63

// LegacyMaxBlocksPerSubnet is the most blocks a subnet could hold in releases before
// cluster feature level 1, whose coilds keep block indexes in 32 bits and scan a pool's
// blocks from the first: a pool with a larger subnet needs level 1 (every coild reads
// 64-bit block indexes and searches free blocks in proportion to the blocks in use).
const LegacyMaxBlocksPerSubnet = 1 << 24

// SubnetBlocks is the number of blocks of a subnet that Coil numbers for the given block
// size: the IPv4 part decides in a dual-stack subnet. It saturates at MaxBlocksPerSubnet.
func SubnetBlocks(s events.Subnet, blockBits uint8) uint64 {
	p := s.IPv4
	if !p.IsValid() {
		p = s.IPv6
	}
	if !p.IsValid() {
		return 0
	}
	host := p.Addr().BitLen() - p.Bits() - int(blockBits)
	if host < 0 {
		return 0
	}
	if host > MaxBlockIndexBits {
		host = MaxBlockIndexBits
	}
	return 1 << host
}

// NumBlocks is the number of blocks in the pool, over all its subnets (saturating at
// 2^64-1 for pools the fold accepted unchecked; validated pools stay within MaxBlocksPerPool).
func (p *Pool) NumBlocks() uint64 {
	var n uint64
	for _, s := range p.Subnets {
		sum, carry := bits.Add64(n, SubnetBlocks(s, p.BlockSizeBits), 0)
		if carry != 0 {
			return 1<<64 - 1
		}
		n = sum
	}
	return n
}

// BlockSize is the number of addresses in one block.
func (p *Pool) BlockSize() uint64 { return 1 << p.BlockSizeBits }

// Block returns the prefixes of block i (one per family of its subnet); ok is false for
// an index out of range.
func (p *Pool) Block(i uint64) (prefixes []netip.Prefix, ok bool) {
	idx := i
	for _, s := range p.Subnets {
		n := SubnetBlocks(s, p.BlockSizeBits)
		if idx >= n {
			idx -= n
			continue
		}
		for _, sub := range []netip.Prefix{s.IPv4, s.IPv6} {
			if !sub.IsValid() {
				continue
			}
			plen := sub.Addr().BitLen() - int(p.BlockSizeBits)
			hi, lo := shifted(idx, p.BlockSizeBits)
			base := addOffset128(sub.Masked().Addr(), hi, lo)
			prefixes = append(prefixes, netip.PrefixFrom(base, plen))
		}
		return prefixes, true
	}
	return nil, false
}

// shifted is idx<<bits as a 128-bit number (hi, lo).
func shifted(idx uint64, bits uint8) (hi, lo uint64) {
	if bits == 0 {
		return 0, idx
	}
	return idx >> (64 - bits), idx << bits
}

// Addrs returns the addresses at offset within block i, one per family.
func (p *Pool) Addrs(i uint64, offset uint64) ([]netip.Addr, bool) {
	prefixes, ok := p.Block(i)
	if !ok || offset >= p.BlockSize() {
		return nil, false
	}
	out := make([]netip.Addr, len(prefixes))
	for k, pf := range prefixes {
		out[k] = addOffset(pf.Addr(), offset)
	}
	return out, true
}

// Locate finds the block and offset of addr in the pool.
func (p *Pool) Locate(addr netip.Addr) (block uint64, offset uint64, ok bool) {
	var first uint64
	for _, s := range p.Subnets {
		n := SubnetBlocks(s, p.BlockSizeBits)
		for _, sub := range []netip.Prefix{s.IPv4, s.IPv6} {
			if !sub.IsValid() || !sub.Contains(addr) {
				continue
			}
			hi, lo := diff128(addr, sub.Masked().Addr())
			off := lo & (p.BlockSize() - 1)
			if hi>>p.BlockSizeBits != 0 {
				return 0, 0, false // beyond 2^64 blocks: past MaxBlocksPerSubnet
			}
			idx := lo >> p.BlockSizeBits
			if p.BlockSizeBits > 0 {
				idx |= hi << (64 - p.BlockSizeBits)
			}
			if idx >= n {
				return 0, 0, false
			}
			return first + idx, off, true
		}
		first += n
	}
	return 0, 0, false
}

// Overlaps reports whether prefix a and b share any address.
func Overlaps(a, b netip.Prefix) bool {
	return a.IsValid() && b.IsValid() && a.Overlaps(b)
}

// AddrAt returns the address at offset off within prefix p.
func AddrAt(p netip.Prefix, off uint64) netip.Addr { return addOffset(p.Addr(), off) }

// addOffset returns a+off (an offset within a block: block sizes are at most 16 bits).
func addOffset(a netip.Addr, off uint64) netip.Addr { return addOffset128(a, 0, off) }

// addOffset128 returns a+(hi,lo), wrapping within the address family; for IPv4 only lo
// counts (a block of an IPv4 subnet lies within 32 bits).
func addOffset128(a netip.Addr, hi, lo uint64) netip.Addr {
	if a.Is4() {
		b := a.As4()
		v := binary.BigEndian.Uint32(b[:]) + uint32(lo)
		binary.BigEndian.PutUint32(b[:], v)
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	ahi, alo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	lo2, carry := bits.Add64(alo, lo, 0)
	hi2, _ := bits.Add64(ahi, hi, carry)
	binary.BigEndian.PutUint64(b[:8], hi2)
	binary.BigEndian.PutUint64(b[8:], lo2)
	return netip.AddrFrom16(b)
}

// diff128 returns a-base for a within a subnet starting at base, as a 128-bit number.
func diff128(a, base netip.Addr) (hi, lo uint64) {
	if a.Is4() {
		x, y := a.As4(), base.As4()
		return 0, uint64(binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(y[:]))
	}
	x, y := a.As16(), base.As16()
	lo, borrow := bits.Sub64(binary.BigEndian.Uint64(x[8:]), binary.BigEndian.Uint64(y[8:]), 0)
	hi, _ = bits.Sub64(binary.BigEndian.Uint64(x[:8]), binary.BigEndian.Uint64(y[:8]), borrow)
	return hi, lo
}
