package netplumb

import (
	"net"
	"net/netip"
	"testing"

	"github.com/cockroachdb/errors"
)

func TestHostVethName(t *testing.T) {
	a := HostVethName("0123456789abcdef", "eth0")
	if len(a) != 15 || a[:4] != "coil" {
		t.Fatalf("HostVethName = %q, want coil + 11 hex", a)
	}
	if a != HostVethName("0123456789abcdef", "eth0") {
		t.Fatal("HostVethName is not deterministic")
	}
	if a == HostVethName("0123456789abcdef", "eth1") || a == HostVethName("0123456789abcdee", "eth0") {
		t.Fatal("HostVethName collides for different inputs")
	}
	// Pinned: the name is part of the on-node state (a change would leak every veth).
	if got := HostVethName("x", "y"); got != "coil748fdbd6c0b" {
		t.Fatalf(`HostVethName("x", "y") = %q, want sha1("x/y")[:11]`, got)
	}
}

func TestPodValidate(t *testing.T) {
	v4 := netip.MustParseAddr("10.1.0.2")
	v6 := netip.MustParseAddr("fd00::2")
	ok := Pod{ContainerID: "c", IfName: "eth0", NetNS: "/var/run/netns/x", Addrs: []netip.Addr{v6, v4}}
	g4, g6, err := ok.validate()
	if err != nil || g4 != v4 || g6 != v6 {
		t.Fatalf("validate = %v %v %v", g4, g6, err)
	}
	bad := []Pod{
		{IfName: "eth0", NetNS: "/x", Addrs: []netip.Addr{v4}},
		{ContainerID: "c", NetNS: "/x", Addrs: []netip.Addr{v4}},
		{ContainerID: "c", IfName: "0123456789abcdef", NetNS: "/x", Addrs: []netip.Addr{v4}},
		{ContainerID: "c", IfName: "eth0", Addrs: []netip.Addr{v4}},
		{ContainerID: "c", IfName: "eth0", NetNS: "/x"},
		{ContainerID: "c", IfName: "eth0", NetNS: "/x", Addrs: []netip.Addr{v4, v4}},
		{ContainerID: "c", IfName: "eth0", NetNS: "/x", Addrs: []netip.Addr{v6, v6}},
		{ContainerID: "c", IfName: "eth0", NetNS: "/x", Addrs: []netip.Addr{{}}},
		{ContainerID: "c", IfName: "eth0", NetNS: "/x", Addrs: []netip.Addr{netip.IPv4Unspecified()}},
	}
	for i, p := range bad {
		if _, _, err := p.validate(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("case %d: validate = %v, want ErrInvalidArgument", i, err)
		}
	}
}

func TestPrefixConversion(t *testing.T) {
	for _, s := range []string{"10.1.2.0/27", "0.0.0.0/0", "fd00::/64", "::/0", "10.1.2.3/32", "fd00::5/128", "::ffff:10.0.0.0/104"} {
		p := netip.MustParsePrefix(s)
		got, ok := ipNetToPrefix(prefixToIPNet(p))
		if !ok || got != p {
			t.Errorf("round trip %s = %s, %v", s, got, ok)
		}
	}
	// The kernel library hands default IPv4 routes out with a 16-byte zero address.
	got, ok := ipNetToPrefix(&net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)})
	if !ok || got != netip.MustParsePrefix("0.0.0.0/0") {
		t.Errorf("16-byte IPv4 default = %s", got)
	}
}
