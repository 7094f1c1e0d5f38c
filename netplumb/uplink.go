package netplumb

import (
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Uplink is where the host namespace's default route leaves the node: what a pod's MTU
// follows when nobody configured one.
type Uplink struct {
	// Link names the interface ("eth0"; "eth0,eth1" for a multipath route), Family the
	// route's ("IPv4" or "IPv6").
	Link   string
	Family string
	// MTU is the smallest of the interfaces' MTUs and of the route's own "mtu" attribute
	// (ip route ... mtu N), when it has one.
	MTU int
}

// UplinkMTU finds the default routes of the host namespace's main table (IPv4 and IPv6;
// of several in one family, the one with the lowest metric) and returns the one whose
// path has the smallest MTU. Only unicast routes through an interface count (not
// blackhole or unreachable defaults). It changes nothing. Errors: ErrNoDefaultRoute
// when there is none.
func (p *Plumber) UplinkMTU() (Uplink, error) {
	var best *Uplink
	for _, fam := range []struct {
		family int
		name   string
	}{{netlink.FAMILY_V4, "IPv4"}, {netlink.FAMILY_V6, "IPv6"}} {
		routes, err := retryDump(func() ([]netlink.Route, error) {
			return p.host.RouteListFiltered(fam.family, &netlink.Route{Table: MainTable}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return Uplink{}, errors.Wrapf(err, "netplumb: list the %s main table", fam.name)
		}
		var def *netlink.Route
		for i := range routes {
			r := &routes[i]
			if dst, ok := ipNetToPrefix(r.Dst); ok && dst.Bits() != 0 {
				continue // a default route may come without a destination
			}
			if r.Type != unix.RTN_UNICAST || (r.LinkIndex == 0 && len(r.MultiPath) == 0) {
				continue
			}
			if def == nil || r.Priority < def.Priority {
				def = r
			}
		}
		if def == nil {
			continue
		}
		u, err := p.uplinkOf(def)
		if err != nil {
			return Uplink{}, err
		}
		u.Family = fam.name
		if best == nil || u.MTU < best.MTU {
			best = &u
		}
	}
	if best == nil {
		return Uplink{}, errors.Wrap(ErrNoDefaultRoute, "netplumb: the main table of the node's namespace has no default route through an interface")
	}
	return *best, nil
}

// uplinkOf reads the interfaces of a default route.
func (p *Plumber) uplinkOf(r *netlink.Route) (Uplink, error) {
	idx := []int{r.LinkIndex}
	if len(r.MultiPath) > 0 {
		idx = idx[:0]
		for _, nh := range r.MultiPath {
			idx = append(idx, nh.LinkIndex)
		}
	}
	u := Uplink{MTU: r.MTU}
	var names []string
	for _, i := range idx {
		l, err := p.host.LinkByIndex(i)
		if err != nil {
			return Uplink{}, errors.Wrapf(err, "netplumb: look up link %d of the default route", i)
		}
		names = append(names, l.Attrs().Name)
		if m := l.Attrs().MTU; u.MTU == 0 || m < u.MTU {
			u.MTU = m
		}
	}
	u.Link = strings.Join(names, ",")
	return u, nil
}
