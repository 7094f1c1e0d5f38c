package projection_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// The ranges issue 10 found accepted as pools (a pod got 169.254.1.1, its default route
// pointed at itself), their neighbours, and ranges that stay usable.
func TestCheckUsable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"169.254.0.0/16", "169.254.0.0/16 is link-local: pods' default gateway 169.254.1.1 lives there"},
		{"169.254.1.0/24", "169.254.1.0/24 is link-local (169.254.0.0/16): pods' default gateway 169.254.1.1"},
		{"169.254.200.0/24", "is link-local (169.254.0.0/16)"},
		{"169.0.0.0/8", "169.0.0.0/8 contains 169.254.0.0/16, link-local"},
		{"127.0.0.0/16", "127.0.0.0/16 is loopback (127.0.0.0/8): packets to it never leave a host"},
		{"224.0.0.0/16", "224.0.0.0/16 is multicast (224.0.0.0/4): a pod's address must be unicast"},
		{"239.255.0.0/24", "is multicast"},
		{"0.0.0.0/16", `0.0.0.0/16 is reserved for "this network" (0.0.0.0/8): 0.0.0.0 is the unspecified address`},
		{"0.0.0.0/0", `0.0.0.0/0 contains 0.0.0.0/8, reserved for "this network"`},
		{"255.255.255.0/24", "255.255.255.0/24 contains 255.255.255.255, the limited broadcast address"},
		{"255.255.255.255/32", "255.255.255.255/32 is the limited broadcast address"},
		{"240.0.0.0/4", "240.0.0.0/4 contains 255.255.255.255, the limited broadcast address"},
		{"fe80::/112", "fe80::/112 is link-local (fe80::/10): pods' default gateway fe80::1 lives there"},
		{"fe80::/10", "fe80::/10 is link-local: pods' default gateway fe80::1"},
		{"febf:1::/112", "is link-local (fe80::/10)"},
		{"ff02::/112", "ff02::/112 is multicast (ff00::/8)"},
		{"::/112", "::/112 is reserved for the unspecified, loopback and IPv4-compatible addresses (::/96)"},
		{"::1/128", "::1/128 is reserved for the unspecified, loopback"},
		{"::a00:0/120", "IPv4-compatible"},
		{"::fffe:0:0/95", "::fffe:0:0/95 contains ::ffff:0.0.0.0/96, IPv4-mapped"},
		{"::ffff:0:0/112", "is IPv4-mapped (::ffff:0.0.0.0/96)"},
		{"::/0", "::/0 contains ::/96"},
	} {
		err := projection.CheckUsable(netip.MustParsePrefix(tc.in))
		if !errors.Is(err, projection.ErrReservedRange) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckUsable(%s) = %v\nwant ErrReservedRange with %q", tc.in, err, tc.want)
		}
	}
	for _, ok := range []string{
		"10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "1.0.0.0/8", "126.255.0.0/16", "128.0.0.0/8",
		"169.253.0.0/16", "169.255.0.0/16", "223.255.255.0/24", "240.0.0.0/8", "255.255.254.0/24", "255.255.255.0/25",
		"255.255.255.252/31", "fd00::/112", "fc00::/7", "2001:db8::/32", "fec0::/10", "64:ff9b::/96", "::1:0:0:0/112",
		"fe7f:ffff::/32", "fec0::/112", "feff::/16",
	} {
		if err := projection.CheckUsable(netip.MustParsePrefix(ok)); err != nil {
			t.Errorf("CheckUsable(%s) = %v, want nil", ok, err)
		}
	}
	for _, gw := range []netip.Addr{projection.PodGateway4, projection.PodGateway6} {
		if err := projection.CheckUsable(netip.PrefixFrom(gw, gw.BitLen())); err == nil {
			t.Errorf("the gateway %s is usable", gw)
		}
	}
}

// A log written before the rule keeps replaying: the fold never checks the ranges.
func TestReservedPoolReplays(t *testing.T) {
	c := &chain{stream: events.ClusterStream}
	cl := projection.NewCluster()
	ll := events.Subnet{IPv4: netip.MustParsePrefix("169.254.0.0/16")}
	for _, p := range []events.Payload{
		&events.PoolCreated{Name: "ll", BlockSizeBits: 5, Subnets: []events.Subnet{ll}},
		&events.PoolSubnetAdded{Name: "ll", Subnet: events.Subnet{IPv4: netip.MustParsePrefix("127.0.0.0/16")}},
	} {
		if err := cl.Apply(c.next(t, p)); err != nil {
			t.Fatalf("apply %s: %v", p.EventType(), err)
		}
	}
	if p := cl.Pools["ll"]; p == nil || len(p.Subnets) != 2 || p.NumBlocks() != 4096 {
		t.Fatalf("pool ll = %+v", cl.Pools["ll"])
	}
}
