package kubelab

import (
	"context"
	"net/netip"
	"slices"
	"strconv"

	"github.com/coil-net/coil/lab"
)

// BGPRoutes lists the IPv4 routes BIRD installed in the node's main table (protocol
// bird): one per block of the other nodes.
func BGPRoutes(ctx context.Context, n *lab.Node) ([]lab.Route, error) {
	rs, err := n.Routes(ctx, 254)
	if err != nil {
		return nil, err
	}
	var out []lab.Route
	for _, r := range rs {
		if r.Protocol == "bird" {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b lab.Route) int { return comparePrefix(a.Dst, b.Dst) })
	return out, nil
}

// ExportedBlocks lists the IPv4 blocks coild exports on the node (table 119, protocol 30).
func ExportedBlocks(ctx context.Context, n *lab.Node) ([]netip.Prefix, error) {
	rs, err := n.Routes(ctx, lab.DefaultExportTable)
	if err != nil {
		return nil, err
	}
	var ps []netip.Prefix
	for _, r := range rs {
		if r.Protocol == strconv.Itoa(lab.DefaultRouteProtocol) {
			ps = append(ps, r.Dst)
		}
	}
	slices.SortFunc(ps, comparePrefix)
	return ps, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
