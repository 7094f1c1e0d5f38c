package netplumb_test

import (
	"net/netip"
	"testing"

	"github.com/coil-net/coil/netplumb"
	"github.com/coil-net/coil/projection"
)

// The gateways put on every host veth are the ones pool validation keeps out of pools
// (projection.PodGateway4/6, refused with their link-local ranges): a pod given the
// gateway's address would route to itself (issue 10).
func TestGatewaysAreNeverPoolAddresses(t *testing.T) {
	if netplumb.DefaultGateway4 != projection.PodGateway4 || netplumb.DefaultGateway6 != projection.PodGateway6 {
		t.Fatalf("netplumb's gateways %s, %s differ from projection's %s, %s",
			netplumb.DefaultGateway4, netplumb.DefaultGateway6, projection.PodGateway4, projection.PodGateway6)
	}
	for _, gw := range []netip.Addr{netplumb.DefaultGateway4, netplumb.DefaultGateway6} {
		if err := projection.CheckUsable(netip.PrefixFrom(gw, gw.BitLen())); err == nil {
			t.Errorf("a pool may hold the gateway %s", gw)
		}
	}
}
