package projection

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"github.com/coil-net/coil/events"
)

// MaxBlocksPerSubnet bounds how many blocks one subnet may hold (it keeps block indexes
// small and scans cheap); pool validation refuses subnets beyond it.
const MaxBlocksPerSubnet = 1 << 24

// SubnetBlocks is the number of blocks a subnet holds for the given block size:
// the IPv4 part decides in a dual-stack subnet. It may exceed MaxBlocksPerSubnet
// (validation refuses such pools); it saturates at 1<<62.
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
	if host > 62 {
		host = 62
	}
	return 1 << host
}

// NumBlocks is the number of blocks in the pool, over all its subnets.
func (p *Pool) NumBlocks() uint64 {
	var n uint64
	for _, s := range p.Subnets {
		n += SubnetBlocks(s, p.BlockSizeBits)
	}
	return n
}

// BlockSize is the number of addresses in one block.
func (p *Pool) BlockSize() uint64 { return 1 << p.BlockSizeBits }

// Block returns the prefixes of block i (one per family of its subnet); ok is false for
// an index out of range.
func (p *Pool) Block(i uint32) (prefixes []netip.Prefix, ok bool) {
	idx := uint64(i)
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
			bits := sub.Addr().BitLen() - int(p.BlockSizeBits)
			base := addOffset(sub.Masked().Addr(), idx<<p.BlockSizeBits)
			prefixes = append(prefixes, netip.PrefixFrom(base, bits))
		}
		return prefixes, true
	}
	return nil, false
}

// Addrs returns the addresses at offset within block i, one per family.
func (p *Pool) Addrs(i uint32, offset uint64) ([]netip.Addr, bool) {
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
func (p *Pool) Locate(addr netip.Addr) (block uint32, offset uint64, ok bool) {
	var first uint64
	for _, s := range p.Subnets {
		n := SubnetBlocks(s, p.BlockSizeBits)
		for _, sub := range []netip.Prefix{s.IPv4, s.IPv6} {
			if !sub.IsValid() || !sub.Contains(addr) {
				continue
			}
			d := diff(addr, sub.Masked().Addr())
			off := d & (p.BlockSize() - 1)
			idx := d >> p.BlockSizeBits
			if idx >= n {
				return 0, 0, false
			}
			return uint32(first + idx), off, true
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

// addOffset returns a+off (indexes are bounded by MaxBlocksPerSubnet and block sizes by
// 16 bits, so offsets within a subnet fit in 64 bits).
func addOffset(a netip.Addr, off uint64) netip.Addr {
	if a.Is4() {
		b := a.As4()
		v := binary.BigEndian.Uint32(b[:]) + uint32(off)
		binary.BigEndian.PutUint32(b[:], v)
		return netip.AddrFrom4(b)
	}
	b := a.As16()
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	lo2, carry := bits.Add64(lo, off, 0)
	binary.BigEndian.PutUint64(b[:8], hi+carry)
	binary.BigEndian.PutUint64(b[8:], lo2)
	return netip.AddrFrom16(b)
}

// diff returns a-base for a within a subnet starting at base (fits in 64 bits, see addOffset;
// larger differences saturate).
func diff(a, base netip.Addr) uint64 {
	if a.Is4() {
		x, y := a.As4(), base.As4()
		return uint64(binary.BigEndian.Uint32(x[:]) - binary.BigEndian.Uint32(y[:]))
	}
	x, y := a.As16(), base.As16()
	lo, borrow := bits.Sub64(binary.BigEndian.Uint64(x[8:]), binary.BigEndian.Uint64(y[8:]), 0)
	hi, _ := bits.Sub64(binary.BigEndian.Uint64(x[:8]), binary.BigEndian.Uint64(y[:8]), borrow)
	if hi != 0 {
		return 1<<64 - 1
	}
	return lo
}
