package projection

import (
	"net/netip"

	"github.com/cockroachdb/errors"
)

// ErrReservedRange: a subnet that overlaps a range no pool may hand out to pods.
var ErrReservedRange = errors.New("projection: reserved range")

// The pods' default gateways: coild puts them on every host veth (netplumb.DefaultGateway4
// and DefaultGateway6; a netplumb test checks they are these) and every pod's default
// route points at them. A pod holding one of them routes to itself, so no pool may hold
// them: they lie in the link-local ranges CheckUsable refuses.
var (
	PodGateway4 = netip.MustParseAddr("169.254.1.1")
	PodGateway6 = netip.MustParseAddr("fe80::1")
)

// reservedRange is a range no pool may overlap, and why.
type reservedRange struct {
	prefix netip.Prefix
	name   string // what the range is: "link-local", as in "X is link-local"
	why    string
}

// reservedRanges are the ranges whose addresses break a node or its pods when handed out
// (docs/coilctl.md, "What coilctl refuses and why"). Ranges that work (measured: the
// kernel routes them and BIRD 2.0.12 announces their blocks) are not here, though they
// are special elsewhere: 240.0.0.0/4 but its broadcast address ("class E", which some
// clouds use for pods), 100.64.0.0/10, fec0::/10, 64:ff9b::/96, documentation ranges.
var reservedRanges = []reservedRange{
	{netip.MustParsePrefix("0.0.0.0/8"), `reserved for "this network"`,
		"0.0.0.0 is the unspecified address, and BIRD does not announce routes into 0.0.0.0/8 (RFC 1122)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback",
		"packets to it never leave a host"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local",
		"pods' default gateway " + PodGateway4.String() + " lives there (on every host veth), and routers do not forward link-local addresses"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast",
		"a pod's address must be unicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "the limited broadcast address",
		"it addresses every host of a link, never one pod"},
	{netip.MustParsePrefix("::/96"), "reserved for the unspecified, loopback and IPv4-compatible addresses",
		":: is the unspecified address, ::1 the loopback, and IPv4-compatible addresses are deprecated (RFC 4291) and not announced by BIRD"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped",
		"these stand for IPv4 addresses on a host's sockets, and the kernel drops packets from them"},
	{netip.MustParsePrefix("fe80::/10"), "link-local",
		"pods' default gateway " + PodGateway6.String() + " lives there (on every host veth), and routers do not forward link-local addresses"},
	{netip.MustParsePrefix("ff00::/8"), "multicast",
		"a pod's address must be unicast"},
}

// CheckUsable refuses (ErrReservedRange) a subnet that overlaps a reserved range: loopback,
// link-local (which holds the pods' gateways, PodGateway4 and PodGateway6), multicast,
// unspecified ("this network", ::/96), the limited broadcast address, IPv4-mapped IPv6.
// The message names the range and why, e.g. "169.254.0.0/16 is link-local: pods' default
// gateway 169.254.1.1 lives there (...)", "169.254.7.0/24 is link-local (169.254.0.0/16):
// ...", "255.255.255.0/24 contains 255.255.255.255, the limited broadcast address: ...".
//
// Pool definitions are checked when they are made (allocator.Admin); folding the log
// does not check them, so a log written before the rule existed still replays.
func CheckUsable(p netip.Prefix) error {
	if !p.IsValid() {
		return nil
	}
	p = p.Masked()
	for _, r := range reservedRanges {
		if r.prefix.Addr().Is4() != p.Addr().Is4() || !r.prefix.Overlaps(p) {
			continue
		}
		switch {
		case r.prefix == p:
			return errors.Wrapf(ErrReservedRange, "%s is %s: %s", p, r.name, r.why)
		case r.prefix.Bits() < p.Bits(): // p lies inside the range
			return errors.Wrapf(ErrReservedRange, "%s is %s (%s): %s", p, r.name, r.prefix, r.why)
		}
		rng := r.prefix.String()
		if r.prefix.IsSingleIP() {
			rng = r.prefix.Addr().String()
		}
		return errors.Wrapf(ErrReservedRange, "%s contains %s, %s: %s", p, rng, r.name, r.why)
	}
	return nil
}
