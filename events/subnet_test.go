package events_test

import (
	"net/netip"
	"testing"

	"github.com/coil-net/coil/events"
)

func TestSubnetString(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("fd00::/112")
	for _, c := range []struct {
		s    events.Subnet
		want string
	}{
		{events.Subnet{IPv4: v4}, "10.0.0.0/16"},
		{events.Subnet{IPv6: v6}, "fd00::/112"},
		{events.Subnet{IPv4: v4, IPv6: v6}, "10.0.0.0/16,fd00::/112"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("%#v: %q, want %q", c.s, got, c.want)
		}
	}
}
