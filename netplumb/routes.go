package netplumb

import (
	"context"
	"net/netip"
	"slices"

	"github.com/cockroachdb/errors"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func checkTableProto(table, protocol int) error {
	if table <= 0 || table == unix.RT_TABLE_LOCAL || table > int(^uint32(0)>>1) {
		return errors.Wrapf(ErrInvalidArgument, "route table %d", table)
	}
	if protocol <= 0 || protocol > 255 {
		return errors.Wrapf(ErrInvalidArgument, "route protocol %d", protocol)
	}
	return nil
}

// ListRoutes returns the destinations of the routes in the host namespace's table whose
// protocol is protocol, IPv4 and IPv6, sorted. Routes of other protocols are ignored.
// An empty table is an empty list.
func (p *Plumber) ListRoutes(ctx context.Context, table, protocol int) ([]netip.Prefix, error) {
	if err := checkTableProto(table, protocol); err != nil {
		return nil, err
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	routes, err := p.listRoutes(table, protocol, netip.Prefix{})
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(routes))
	for _, r := range routes {
		if dst, ok := ipNetToPrefix(r.Dst); ok {
			out = append(out, dst)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out), nil
}

// listRoutes dumps a table (both families), filtered by protocol when protocol > 0 and
// by destination when dst is valid.
func (p *Plumber) listRoutes(table, protocol int, dst netip.Prefix) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: table, Protocol: netlink.RouteProtocol(protocol)}
	mask := netlink.RT_FILTER_TABLE
	if protocol > 0 {
		mask |= netlink.RT_FILTER_PROTOCOL
	}
	family := netlink.FAMILY_ALL
	if dst.IsValid() {
		filter.Dst = prefixToIPNet(dst)
		mask |= netlink.RT_FILTER_DST
		family = netlink.FAMILY_V4
		if dst.Addr().Is6() {
			family = netlink.FAMILY_V6
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return p.host.RouteListFiltered(family, filter, mask)
	})
	if err != nil {
		return nil, errors.Wrapf(err, "netplumb: list routes in table %d", table)
	}
	return routes, nil
}

// AddBlackhole makes sure the host namespace's table holds a blackhole route to dst with
// the given protocol. Idempotent: an existing blackhole route of that protocol is left
// alone, a route of that protocol but another type is replaced. A route to dst with
// another protocol is never touched: AddBlackhole then fails with ErrRouteConflict.
func (p *Plumber) AddBlackhole(ctx context.Context, table, protocol int, dst netip.Prefix) error {
	if err := checkTableProto(table, protocol); err != nil {
		return err
	}
	if !dst.IsValid() || dst != dst.Masked() || dst.Addr().Is4In6() || dst.Addr().Zone() != "" {
		return errors.Wrapf(ErrInvalidArgument, "prefix %s (must be masked)", dst)
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	r := &netlink.Route{
		Dst:      prefixToIPNet(dst),
		Table:    table,
		Protocol: netlink.RouteProtocol(protocol),
		Type:     unix.RTN_BLACKHOLE,
	}
	err := p.host.RouteAdd(r)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EEXIST) {
		return errors.Wrapf(err, "netplumb: add blackhole %s table %d", dst, table)
	}
	existing, lerr := p.listRoutes(table, 0, dst)
	if lerr != nil {
		return lerr
	}
	for _, e := range existing {
		if e.Protocol != netlink.RouteProtocol(protocol) {
			continue
		}
		if e.Type == unix.RTN_BLACKHOLE {
			return nil
		}
		if err := p.host.RouteReplace(r); err != nil {
			return errors.Wrapf(err, "netplumb: replace %s table %d with a blackhole", dst, table)
		}
		return nil
	}
	return errors.Wrapf(ErrRouteConflict, "%s in table %d", dst, table)
}

// DelRoute deletes the route to dst with the given protocol from the host namespace's
// table. Idempotent: no such route is success. Routes with another protocol are never
// deleted.
func (p *Plumber) DelRoute(ctx context.Context, table, protocol int, dst netip.Prefix) error {
	if err := checkTableProto(table, protocol); err != nil {
		return err
	}
	if !dst.IsValid() {
		return errors.Wrapf(ErrInvalidArgument, "prefix %s", dst)
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	for {
		r := &netlink.Route{Dst: prefixToIPNet(dst), Table: table, Protocol: netlink.RouteProtocol(protocol)}
		if err := p.host.RouteDel(r); err != nil {
			if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
				return nil
			}
			return errors.Wrapf(err, "netplumb: delete %s table %d", dst, table)
		}
		// Several routes of this protocol may share dst (different metrics): delete all.
	}
}
