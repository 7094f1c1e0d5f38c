package netplumb

import (
	"context"
	"net/netip"
	"slices"

	"github.com/cockroachdb/errors"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The route primitives below serve the export table, which holds only Coil's blackhole
// routes. Coil owns a route there only if it is a blackhole route of Coil's protocol: the
// primitives never list, replace or delete any other route. They refuse the kernel's own
// tables (unspec 0, default 253, main 254, local 255), where routes of any protocol are
// the node's.
func checkTableProto(table, protocol int) error {
	switch {
	case table == unix.RT_TABLE_MAIN || table == unix.RT_TABLE_LOCAL || table == unix.RT_TABLE_DEFAULT || table == unix.RT_TABLE_UNSPEC:
		return errors.Wrapf(ErrInvalidArgument, "route table %d is one of the kernel's own (unspec, default, main, local): Coil's export table must be a table of its own", table)
	case table < 0 || table > int(^uint32(0)>>1):
		return errors.Wrapf(ErrInvalidArgument, "route table %d", table)
	}
	if protocol <= 0 || protocol > 255 {
		return errors.Wrapf(ErrInvalidArgument, "route protocol %d", protocol)
	}
	return nil
}

// ListRoutes returns the destinations of the blackhole routes in the host namespace's
// table whose protocol is protocol, IPv4 and IPv6, sorted. Routes of other protocols or
// other types are not Coil's and are ignored. An empty table is an empty list.
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
		if r.Type != unix.RTN_BLACKHOLE {
			continue
		}
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
// alone. Any other route to dst (another protocol, or another type) is not Coil's and is
// never touched: AddBlackhole then fails with ErrRouteConflict.
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
		if e.Protocol == netlink.RouteProtocol(protocol) && e.Type == unix.RTN_BLACKHOLE {
			return nil
		}
	}
	return errors.Wrapf(ErrRouteConflict, "%s in table %d is held by a route Coil did not write (not a blackhole of protocol %d)", dst, table, protocol)
}

// DelRoute deletes the blackhole routes to dst with the given protocol from the host
// namespace's table. Idempotent: no such route is success. Routes of another protocol or
// another type are never deleted: each route is deleted by its exact attributes (type
// and metric included) after it is listed.
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
	routes, err := p.listRoutes(table, protocol, dst)
	if err != nil {
		return err
	}
	for _, r := range routes {
		// Several routes of this protocol may share dst (different metrics): delete all.
		if r.Type != unix.RTN_BLACKHOLE || r.Protocol != netlink.RouteProtocol(protocol) {
			continue
		}
		got, ok := ipNetToPrefix(r.Dst)
		if !ok || got != dst {
			continue
		}
		del := &netlink.Route{Dst: r.Dst, Table: table, Protocol: r.Protocol, Type: r.Type, Priority: r.Priority, Family: r.Family}
		if err := p.host.RouteDel(del); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return errors.Wrapf(err, "netplumb: delete %s table %d", dst, table)
		}
	}
	return nil
}

// HostRoute is one of Coil's routes to a pod in the host's main table (a /32 or /128
// through the pod's host veth).
type HostRoute struct {
	Dst  netip.Prefix
	Link string // the link the route goes through ("" if it could not be named)
}

// HostRoutes lists Coil's routes in the host's main table (the pods' /32 and /128
// routes, protocol --route-protocol), with the link each goes through, sorted by
// destination. Read-only.
func (p *Plumber) HostRoutes(ctx context.Context) ([]HostRoute, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	routes, err := p.hostRoutes(0)
	if err != nil {
		return nil, errors.Wrap(err, "netplumb")
	}
	links, err := retryDump(p.host.LinkList)
	if err != nil {
		return nil, errors.Wrap(err, "netplumb: list links")
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out := make([]HostRoute, 0, len(routes))
	for _, r := range routes {
		if dst, ok := ipNetToPrefix(r.Dst); ok {
			out = append(out, HostRoute{Dst: dst, Link: names[r.LinkIndex]})
		}
	}
	slices.SortFunc(out, func(a, b HostRoute) int { return comparePrefix(a.Dst, b.Dst) })
	return out, nil
}
