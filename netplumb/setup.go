package netplumb

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Pod describes one pod interface to plumb.
type Pod struct {
	// ContainerID and IfName identify the attachment (they name the host veth).
	ContainerID string
	IfName      string
	// NetNS is the path of the pod's network namespace.
	NetNS string
	// Addrs holds at most one IPv4 and at most one IPv6 address, at least one in all.
	Addrs []netip.Addr
	// MTU of both ends of the pair: Prepare creates the pair with it and sets it on an
	// existing pair that has another; Check reports a difference. 0 means Config.MTU
	// (0 there too: the kernel's default, 1500, and an existing pair keeps its own).
	MTU int
}

// Attachment is the result of Setup: what the pod interface looks like.
type Attachment struct {
	HostVeth  string
	HostIndex int
	PodIndex  int // index of IfName inside the pod namespace
	IfName    string
	PodMAC    net.HardwareAddr
	HostMAC   net.HardwareAddr
	// Addrs are the pod's addresses, IPv4 first.
	Addrs    []netip.Addr
	Gateway4 netip.Addr // valid when the pod has an IPv4 address
	Gateway6 netip.Addr // valid when the pod has an IPv6 address
	// MTU of both ends of the pair.
	MTU int
}

// validateID checks the fields that identify the attachment (all but Addrs).
func (pod Pod) validateID() error {
	if pod.ContainerID == "" {
		return errors.Wrap(ErrInvalidArgument, "empty container ID")
	}
	if pod.IfName == "" || len(pod.IfName) > 15 || strings.ContainsAny(pod.IfName, "/ \t\n:") || pod.IfName == "." || pod.IfName == ".." {
		return errors.Wrapf(ErrInvalidArgument, "interface name %q", pod.IfName)
	}
	if pod.NetNS == "" {
		return errors.Wrap(ErrInvalidArgument, "empty netns path")
	}
	if pod.MTU < 0 || pod.MTU > MaxMTU {
		return errors.Wrapf(ErrInvalidArgument, "MTU %d", pod.MTU)
	}
	return nil
}

// MaxMTU is the largest MTU of a veth (the kernel's ETH_MAX_MTU).
const MaxMTU = 65535

// mtu is the MTU pod's pair must have; 0: whatever the kernel gave it.
func (p *Plumber) mtu(pod Pod) int {
	if pod.MTU > 0 {
		return pod.MTU
	}
	return p.cfg.MTU
}

func (pod Pod) validate() (v4, v6 netip.Addr, err error) {
	if err = pod.validateID(); err != nil {
		return v4, v6, err
	}
	for _, a := range pod.Addrs {
		switch {
		case !a.IsValid() || a.IsUnspecified() || a.Zone() != "":
			return v4, v6, errors.Wrapf(ErrInvalidArgument, "address %s", a)
		case a.Is4() || a.Is4In6():
			if v4.IsValid() {
				return v4, v6, errors.Wrap(ErrInvalidArgument, "more than one IPv4 address")
			}
			v4 = a.Unmap()
		default:
			if v6.IsValid() {
				return v4, v6, errors.Wrap(ErrInvalidArgument, "more than one IPv6 address")
			}
			v6 = a
		}
	}
	if !v4.IsValid() && !v6.IsValid() {
		return v4, v6, errors.Wrap(ErrInvalidArgument, "no address")
	}
	return v4, v6, nil
}

func addrList(v4, v6 netip.Addr) []netip.Addr {
	var out []netip.Addr
	if v4.IsValid() {
		out = append(out, v4)
	}
	if v6.IsValid() {
		out = append(out, v6)
	}
	return out
}

// Setup plumbs a pod interface and returns its attachment: Prepare, then Finish with
// pod.Addrs.
//
// It creates a veth pair inside the host namespace with the peer born in the pod
// namespace under the name pod.IfName; a host link of the same name that is not this
// pod's pair (stale) is deleted first. Then it configures the pod side (up, addresses as
// /32 and /128, gateway route, default routes) and the host side (up, gateway addresses,
// one scope-link route per pod address in the main table with Config.RouteProtocol; a
// route to the same destination through another link is taken over).
//
// Idempotent: when the pair already exists and is correct, Setup changes nothing and
// returns the same Attachment; when it exists but parts are missing or wrong, Setup
// converges it (extra global addresses on the pod interface and extra Coil routes on the
// host veth are removed). Errors: ErrInvalidArgument, ErrNetNSNotFound if pod.NetNS does
// not exist, ErrNodeNetNS if it is the node's own namespace (see CheckPodNetNS),
// ErrIfNameInUse if the pod has a foreign interface named pod.IfName. When
// Setup created the pair and a later step fails, it deletes the pair before returning.
func (p *Plumber) Setup(ctx context.Context, pod Pod) (Attachment, error) {
	if _, _, err := pod.validate(); err != nil {
		return Attachment{}, err
	}
	pd, err := p.Prepare(ctx, pod)
	if err != nil {
		return Attachment{}, err
	}
	return pd.Finish(ctx, pod.Addrs)
}

// Pending is a pod's veth pair made ready by Prepare, waiting for its addresses. Exactly
// one of Finish or Abort must be called (both release the pod namespace's handle); a
// Pending is not safe for concurrent use.
type Pending struct {
	p                 *Plumber
	pod               Pod
	podNS             netns.NsHandle
	ph                *netlink.Handle
	hostLink, podLink netlink.Link
	// created: this Prepare made the pair, so it holds nothing yet (Finish skips the
	// listings that converge an existing pair).
	created bool
	done    bool
}

// Prepare does the part of Setup that does not depend on the addresses, so that it can
// run while they are being allocated: it finds the pod's pair (Setup's idempotent path)
// or creates it, deleting a stale host link of the name first, and brings both ends up.
// pod.Addrs is ignored. A pair Prepare creates sits in the pending link group
// (PendingGroup) until Finish has configured it, so that a pair left by a crash before
// Finish is recognisable (List reports it with Pending set). Errors: ErrInvalidArgument,
// ErrNetNSNotFound, ErrNodeNetNS (pod.NetNS is the node's own namespace: nothing is
// created), ErrIfNameInUse, as Setup.
func (p *Plumber) Prepare(ctx context.Context, pod Pod) (*Pending, error) {
	if err := pod.validateID(); err != nil {
		return nil, err
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	podNS, err := p.openPodNetNS(pod.NetNS)
	if err != nil {
		return nil, err
	}
	ph, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		_ = podNS.Close()
		return nil, errors.Wrapf(err, "netplumb: netlink handle in %s", pod.NetNS)
	}
	pd := &Pending{p: p, pod: pod, podNS: podNS, ph: ph}
	name := HostVethName(pod.ContainerID, pod.IfName)
	// The usual ADD makes a new pair at once (no look-ups first); a repeated ADD, or a
	// stale link of either name, finds the name taken and takes the slower path.
	mtu := p.mtu(pod)
	pd.hostLink, pd.podLink, err = p.createPair(ph, podNS, name, pod.IfName, mtu)
	pd.created = err == nil
	if errors.Is(err, errLinkExists) {
		pd.hostLink, pd.podLink, err = p.findPair(ph, podNS, name, pod.IfName)
		if err == nil && pd.hostLink != nil && mtu > 0 {
			// A pair that exists (a repeated ADD) gets the MTU asked for now.
			err = pd.setMTU(mtu)
		}
		if err == nil && pd.hostLink == nil {
			pd.hostLink, pd.podLink, err = p.createPair(ph, podNS, name, pod.IfName, mtu)
			if errors.Is(err, errLinkExists) {
				// The host name was freed by findPair, so the clash is in the pod (a race
				// with another agent, or a non-veth device).
				err = errors.Wrapf(ErrIfNameInUse, "create %s/%s: %v", name, pod.IfName, err)
			}
			pd.created = err == nil
		}
	}
	if err == nil {
		err = pd.linksUp()
	}
	if err != nil {
		if aerr := pd.Abort(); aerr != nil {
			err = errors.CombineErrors(err, aerr)
		}
		return nil, errors.Wrapf(err, "netplumb: prepare %s/%s", pod.ContainerID, pod.IfName)
	}
	return pd, nil
}

// setMTU sets mtu on either end of the pair that has another.
func (pd *Pending) setMTU(mtu int) error {
	if pd.podLink.Attrs().MTU != mtu {
		if err := pd.ph.LinkSetMTU(pd.podLink, mtu); err != nil {
			return errors.Wrapf(err, "set the MTU of pod interface %s to %d", pd.podLink.Attrs().Name, mtu)
		}
		pd.podLink.Attrs().MTU = mtu
	}
	if pd.hostLink.Attrs().MTU != mtu {
		if err := pd.p.host.LinkSetMTU(pd.hostLink, mtu); err != nil {
			return errors.Wrapf(err, "set the MTU of host veth %s to %d", pd.hostLink.Attrs().Name, mtu)
		}
		pd.hostLink.Attrs().MTU = mtu
	}
	return nil
}

func (pd *Pending) linksUp() error {
	if pd.podLink.Attrs().Flags&net.FlagUp == 0 {
		if err := pd.ph.LinkSetUp(pd.podLink); err != nil {
			return errors.Wrap(err, "pod link up")
		}
		pd.podLink.Attrs().Flags |= net.FlagUp
	}
	if pd.hostLink.Attrs().Flags&net.FlagUp == 0 {
		if err := pd.p.host.LinkSetUp(pd.hostLink); err != nil {
			return errors.Wrap(err, "host link up")
		}
		pd.hostLink.Attrs().Flags |= net.FlagUp
	}
	return nil
}

// pending tells whether the pair is not (yet) a finished Coil pair: Finish's rollback
// and Abort delete such a pair.
func (pd *Pending) pending() bool {
	return pd.created || (pd.hostLink != nil && pd.hostLink.Attrs().Group == pd.p.PendingGroup())
}

// Finish configures the prepared pair with addrs (at most one IPv4 and one IPv6
// address) and returns the attachment, as Setup does; it then moves the host veth from
// the pending to Coil's link group. When it fails and the pair was pending, it deletes
// the pair. Errors: as Setup. It may be called once.
func (pd *Pending) Finish(ctx context.Context, addrs []netip.Addr) (Attachment, error) {
	if pd.done {
		return Attachment{}, errors.Wrap(ErrInvalidArgument, "Finish after Finish or Abort")
	}
	pod := pd.pod
	pod.Addrs = addrs
	v4, v6, err := pod.validate()
	if err == nil {
		var att Attachment
		att, err = pd.p.configure(ctx, pd.ph, pd.hostLink, pd.podLink, pod.IfName, v4, v6, pd.created)
		if err == nil && pd.hostLink.Attrs().Group != pd.p.cfg.LinkGroup {
			if err = pd.p.host.LinkSetGroup(pd.hostLink, int(pd.p.cfg.LinkGroup)); err != nil {
				err = errors.Wrap(err, "link group")
			}
		}
		if err == nil {
			pd.close()
			if pd.created {
				pd.p.log.Debug("netplumb: pod plumbed", "container", pod.ContainerID, "if", pod.IfName, "hostVeth", att.HostVeth, "addrs", att.Addrs)
			}
			return att, nil
		}
		err = errors.Wrapf(err, "netplumb: setup %s/%s", pod.ContainerID, pod.IfName)
	}
	if aerr := pd.Abort(); aerr != nil {
		err = errors.CombineErrors(err, aerr)
	}
	return Attachment{}, err
}

// Abort gives the prepared pair up: a pending pair (one Prepare created, or one left
// pending by an earlier interrupted Setup) is deleted, an existing finished pair is left
// as it is. Idempotent; the pair already gone is success.
func (pd *Pending) Abort() error {
	if pd.done {
		return nil
	}
	var err error
	if pd.hostLink != nil && pd.pending() {
		if derr := pd.p.host.LinkDel(pd.hostLink); derr != nil && !isNotFound(derr) {
			err = errors.Wrapf(derr, "netplumb: roll back %s", pd.hostLink.Attrs().Name)
		}
	}
	pd.close()
	return err
}

func (pd *Pending) close() {
	pd.done = true
	pd.ph.Close()
	_ = pd.podNS.Close()
}

// findPair returns the existing, matching pair, or (nil, nil) after removing a stale host
// link of that name. It fails with ErrIfNameInUse when the pod has a foreign ifName.
func (p *Plumber) findPair(ph *netlink.Handle, podNS netns.NsHandle, name, ifName string) (netlink.Link, netlink.Link, error) {
	hostLink, err := p.host.LinkByName(name)
	if err != nil && !isNotFound(err) {
		return nil, nil, errors.Wrapf(err, "netplumb: look up %s", name)
	}
	if err != nil {
		hostLink = nil
	}
	podLink, err := ph.LinkByName(ifName)
	if err != nil && !isNotFound(err) {
		return nil, nil, errors.Wrapf(err, "netplumb: look up %s in pod", ifName)
	}
	if err != nil {
		podLink = nil
	}
	if hostLink != nil && podLink != nil && p.isPair(hostLink, podLink, podNS) {
		return hostLink, podLink, nil
	}
	if hostLink != nil {
		p.log.Info("netplumb: deleting stale host veth", "hostVeth", name)
		if err := p.host.LinkDel(hostLink); err != nil && !isNotFound(err) {
			return nil, nil, errors.Wrapf(err, "netplumb: delete stale %s", name)
		}
	}
	if podLink != nil {
		// Deleting the stale host link may have removed it (if it was its peer).
		if _, err := ph.LinkByName(ifName); err == nil {
			return nil, nil, errors.Wrapf(ErrIfNameInUse, "%s", ifName)
		} else if !isNotFound(err) {
			return nil, nil, errors.Wrapf(err, "netplumb: look up %s in pod", ifName)
		}
	}
	return nil, nil, nil
}

// isPair tells whether hostLink (in the host ns) and podLink (in podNS) are the two ends
// of one veth pair.
func (p *Plumber) isPair(hostLink, podLink netlink.Link, podNS netns.NsHandle) bool {
	if hostLink.Type() != "veth" || podLink.Type() != "veth" {
		return false
	}
	h, c := hostLink.Attrs(), podLink.Attrs()
	if h.ParentIndex != c.Index || c.ParentIndex != h.Index {
		return false
	}
	id, err := p.host.GetNetNsIdByFd(int(podNS))
	if err != nil || id < 0 {
		return false
	}
	return h.NetNsID == id
}

func (p *Plumber) createPair(ph *netlink.Handle, podNS netns.NsHandle, name, ifName string, mtu int) (netlink.Link, netlink.Link, error) {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.NewLinkAttrs(),
		PeerName:      ifName,
		PeerNamespace: netlink.NsFd(int(podNS)),
		// Chosen here (as the kernel would: random, locally administered) so that the
		// host side need not be read back for its address.
		PeerHardwareAddr: randomMAC(),
	}
	veth.Name = name
	veth.Group = p.PendingGroup()
	veth.MTU = mtu // the peer is created with the same MTU
	veth.Flags = net.FlagUp
	veth.HardwareAddr = randomMAC()
	veth.NumTxQueues, veth.NumRxQueues = 1, 1
	if err := p.host.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, nil, errors.Wrapf(errLinkExists, "create veth %s/%s: %v", name, ifName, err)
		}
		return nil, nil, errors.Wrapf(err, "netplumb: create veth %s/%s", name, ifName)
	}
	// LinkAdd looked the new host link up for its index; the rest of veth is what was
	// asked for. The pod end must be looked up for its index (and is still down).
	var err error
	if veth.Index == 0 {
		err = errors.Newf("netplumb: %s not found after creating it", name)
	} else {
		var podLink netlink.Link
		podLink, err = ph.LinkByName(ifName)
		if err == nil {
			return veth, podLink, nil
		}
	}
	if derr := p.host.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}}); derr != nil && !isNotFound(derr) {
		err = errors.CombineErrors(err, derr)
	}
	return nil, nil, errors.Wrapf(err, "netplumb: read back veth %s/%s", name, ifName)
}

// errLinkExists: the host veth's name or the pod interface's name is taken.
var errLinkExists = errors.New("netplumb: link name taken")

// randomMAC returns a random unicast, locally administered MAC address.
func randomMAC() net.HardwareAddr {
	v := rand.Uint64()
	mac := net.HardwareAddr{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24), byte(v >> 32), byte(v >> 40)}
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

// configure converges both sides of an existing pair and describes the result. fresh
// says the pair was just created (no addresses or routes of its own yet), which spares
// the listings.
func (p *Plumber) configure(ctx context.Context, ph *netlink.Handle, hostLink, podLink netlink.Link, ifName string, v4, v6 netip.Addr, fresh bool) (Attachment, error) {
	if err := ctxErr(ctx); err != nil {
		return Attachment{}, err
	}
	if err := p.configurePod(ph, podLink, v4, v6, fresh); err != nil {
		return Attachment{}, err
	}
	if err := ctxErr(ctx); err != nil {
		return Attachment{}, err
	}
	if err := p.configureHost(hostLink, v4, v6, fresh); err != nil {
		return Attachment{}, err
	}
	att := Attachment{
		HostVeth:  hostLink.Attrs().Name,
		HostIndex: hostLink.Attrs().Index,
		PodIndex:  podLink.Attrs().Index,
		IfName:    ifName,
		PodMAC:    slices.Clone(podLink.Attrs().HardwareAddr),
		HostMAC:   slices.Clone(hostLink.Attrs().HardwareAddr),
		Addrs:     addrList(v4, v6),
		MTU:       podLink.Attrs().MTU,
	}
	if v4.IsValid() {
		att.Gateway4 = p.cfg.Gateway4
	}
	if v6.IsValid() {
		att.Gateway6 = p.cfg.Gateway6
	}
	return att, nil
}

func (p *Plumber) configurePod(ph *netlink.Handle, link netlink.Link, v4, v6 netip.Addr, fresh bool) error {
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := ph.LinkSetUp(link); err != nil {
			return errors.Wrap(err, "pod link up")
		}
	}
	var addrs []netlink.Addr
	var err error
	if !fresh {
		addrs, err = retryDump(func() ([]netlink.Addr, error) { return ph.AddrList(link, netlink.FAMILY_ALL) })
		if err != nil {
			return errors.Wrap(err, "list pod addresses")
		}
	}
	want := addrList(v4, v6)
	have := map[netip.Prefix]bool{}
	for _, a := range addrs {
		pfx, ok := ipNetToPrefix(a.IPNet)
		if !ok || pfx.Addr().IsLinkLocalUnicast() {
			continue
		}
		if slices.Contains(want, pfx.Addr()) && pfx.IsSingleIP() {
			have[pfx] = true
			continue
		}
		if err = ph.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return errors.Wrapf(err, "remove extra pod address %s", pfx)
		}
	}
	for _, a := range want {
		if have[hostPrefix(a)] {
			continue
		}
		nla := &netlink.Addr{IPNet: prefixToIPNet(hostPrefix(a))}
		if a.Is6() {
			nla.Flags = unix.IFA_F_NODAD
		}
		if err = ph.AddrAdd(link, nla); err != nil && !errors.Is(err, unix.EEXIST) {
			return errors.Wrapf(err, "add pod address %s", a)
		}
	}

	var routes []netlink.Route
	if !fresh {
		if routes, err = p.podRoutes(ph, link); err != nil {
			return err
		}
	}
	idx := link.Attrs().Index
	var wantRoutes []netlink.Route
	if v4.IsValid() {
		gw := p.cfg.Gateway4
		wantRoutes = append(wantRoutes,
			netlink.Route{LinkIndex: idx, Dst: prefixToIPNet(hostPrefix(gw)), Scope: netlink.SCOPE_LINK},
			netlink.Route{LinkIndex: idx, Dst: prefixToIPNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: addrToIP(gw)})
	}
	if v6.IsValid() {
		wantRoutes = append(wantRoutes,
			netlink.Route{LinkIndex: idx, Dst: prefixToIPNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0)), Gw: addrToIP(p.cfg.Gateway6)})
	}
	for _, r := range wantRoutes {
		if hasRoute(routes, r) {
			continue
		}
		if err := ph.RouteReplace(&r); err != nil {
			return errors.Wrapf(err, "pod route %s", r)
		}
	}
	return nil
}

func (p *Plumber) podRoutes(ph *netlink.Handle, link netlink.Link) ([]netlink.Route, error) {
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return ph.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: link.Attrs().Index, Table: MainTable},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	return routes, errors.Wrap(err, "list pod routes")
}

// hasRoute tells whether routes contain one with r's destination, gateway and (when r
// sets it) scope.
func hasRoute(routes []netlink.Route, r netlink.Route) bool {
	want, _ := ipNetToPrefix(r.Dst)
	for _, have := range routes {
		dst, ok := ipNetToPrefix(have.Dst)
		if !ok {
			// A default route may come without a destination.
			if r.Gw == nil || want.Bits() != 0 || (have.Gw != nil && (have.Gw.To4() == nil) != (r.Gw.To4() == nil)) {
				continue
			}
			dst = want
		}
		if dst != want || have.LinkIndex != r.LinkIndex {
			continue
		}
		if !have.Gw.Equal(r.Gw) && (have.Gw != nil || r.Gw != nil) {
			continue
		}
		if r.Scope != 0 && have.Scope != r.Scope {
			continue
		}
		return true
	}
	return false
}

func (p *Plumber) configureHost(link netlink.Link, v4, v6 netip.Addr, fresh bool) error {
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := p.host.LinkSetUp(link); err != nil {
			return errors.Wrap(err, "host link up")
		}
	}
	var addrs []netlink.Addr
	var err error
	if !fresh {
		addrs, err = retryDump(func() ([]netlink.Addr, error) { return p.host.AddrList(link, netlink.FAMILY_ALL) })
		if err != nil {
			return errors.Wrap(err, "list host veth addresses")
		}
	}
	type gwAddr struct {
		pfx   netip.Prefix
		scope netlink.Scope
		flags int
	}
	var gws []gwAddr
	if v4.IsValid() {
		gws = append(gws, gwAddr{pfx: hostPrefix(p.cfg.Gateway4), scope: netlink.SCOPE_LINK})
	}
	if v6.IsValid() {
		gws = append(gws, gwAddr{pfx: netip.PrefixFrom(p.cfg.Gateway6, 64), scope: netlink.SCOPE_LINK, flags: unix.IFA_F_NODAD})
	}
	for _, g := range gws {
		found := false
		for _, a := range addrs {
			if pfx, ok := ipNetToPrefix(a.IPNet); ok && pfx == g.pfx {
				found = true
				break
			}
		}
		if found {
			continue
		}
		nla := &netlink.Addr{IPNet: prefixToIPNet(g.pfx), Scope: int(g.scope), Flags: g.flags}
		if err = p.host.AddrAdd(link, nla); err != nil && !errors.Is(err, unix.EEXIST) {
			return errors.Wrapf(err, "add gateway %s", g.pfx)
		}
	}

	var routes []netlink.Route
	if !fresh {
		if routes, err = p.hostRoutes(link.Attrs().Index); err != nil {
			return err
		}
	}
	want := addrList(v4, v6)
	have := map[netip.Prefix]bool{}
	for _, r := range routes {
		dst, ok := ipNetToPrefix(r.Dst)
		if ok && dst.IsSingleIP() && slices.Contains(want, dst.Addr()) && (dst.Addr().Is6() || r.Scope == netlink.SCOPE_LINK) {
			have[dst] = true
			continue
		}
		if err := p.host.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return errors.Wrapf(err, "remove extra host route %s", r.Dst)
		}
	}
	for _, a := range want {
		dst := hostPrefix(a)
		if have[dst] {
			continue
		}
		r := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       prefixToIPNet(dst),
			Scope:     netlink.SCOPE_LINK,
			Protocol:  netlink.RouteProtocol(p.cfg.RouteProtocol),
			Table:     MainTable,
		}
		if a.Is6() {
			r.Scope = netlink.SCOPE_UNIVERSE
		}
		if err := p.host.RouteReplace(r); err != nil {
			return errors.Wrapf(err, "host route %s", dst)
		}
	}
	return nil
}

// hostRoutes lists Coil's routes in the host's main table; index > 0 restricts them to
// one link.
func (p *Plumber) hostRoutes(index int) ([]netlink.Route, error) {
	filter := &netlink.Route{Table: MainTable, Protocol: netlink.RouteProtocol(p.cfg.RouteProtocol), LinkIndex: index}
	mask := netlink.RT_FILTER_TABLE | netlink.RT_FILTER_PROTOCOL
	if index > 0 {
		mask |= netlink.RT_FILTER_OIF
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return p.host.RouteListFiltered(netlink.FAMILY_ALL, filter, mask)
	})
	return routes, errors.Wrap(err, "list host routes")
}

// Check verifies that a pod's attachment is in place: the pod interface exists and is
// up, has exactly pod.Addrs among its global addresses and a default route via the
// gateway for each family, and the host veth is up and routes each address to the pod;
// both ends have the MTU asked for (pod.MTU, else Config.MTU; neither: not checked).
// It changes nothing. Errors: ErrNetNSNotFound, ErrNodeNetNS, ErrLinkNotFound (host veth
// or pod interface missing), ErrCheckFailed (anything else different; also marked
// ErrMTUMismatch when an MTU is among the differences), ErrInvalidArgument.
func (p *Plumber) Check(ctx context.Context, pod Pod) error {
	v4, v6, err := pod.validate()
	if err != nil {
		return err
	}
	if err = ctxErr(ctx); err != nil {
		return err
	}
	podNS, err := p.openPodNetNS(pod.NetNS)
	if err != nil {
		return err
	}
	defer func() { _ = podNS.Close() }()
	ph, err := netlink.NewHandleAt(podNS, unix.NETLINK_ROUTE)
	if err != nil {
		return errors.Wrapf(err, "netplumb: netlink handle in %s", pod.NetNS)
	}
	defer ph.Close()

	name := HostVethName(pod.ContainerID, pod.IfName)
	hostLink, err := p.host.LinkByName(name)
	if isNotFound(err) {
		return errors.Wrapf(ErrLinkNotFound, "host veth %s", name)
	} else if err != nil {
		return errors.Wrapf(err, "netplumb: look up %s", name)
	}
	podLink, err := ph.LinkByName(pod.IfName)
	if isNotFound(err) {
		return errors.Wrapf(ErrLinkNotFound, "pod interface %s", pod.IfName)
	} else if err != nil {
		return errors.Wrapf(err, "netplumb: look up %s in pod", pod.IfName)
	}

	var problems []string
	var mtuWrong bool
	if want := p.mtu(pod); want > 0 {
		for _, l := range []netlink.Link{podLink, hostLink} {
			if have := l.Attrs().MTU; have != want {
				problems = append(problems, fmt.Sprintf("%s has MTU %d, want %d", l.Attrs().Name, have, want))
				mtuWrong = true
			}
		}
	}
	if !p.isPair(hostLink, podLink, podNS) {
		problems = append(problems, fmt.Sprintf("%s is not the peer of %s", pod.IfName, name))
	}
	if podLink.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, pod.IfName+" is down")
	}
	if hostLink.Attrs().Flags&net.FlagUp == 0 {
		problems = append(problems, name+" is down")
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return ph.AddrList(podLink, netlink.FAMILY_ALL) })
	if err != nil {
		return errors.Wrap(err, "netplumb: list pod addresses")
	}
	want := addrList(v4, v6)
	var got []netip.Addr
	for _, a := range addrs {
		if pfx, ok := ipNetToPrefix(a.IPNet); ok && !pfx.Addr().IsLinkLocalUnicast() {
			got = append(got, pfx.Addr())
			if !slices.Contains(want, pfx.Addr()) {
				problems = append(problems, "unexpected pod address "+pfx.String())
			}
		}
	}
	for _, a := range want {
		if !slices.Contains(got, a) {
			problems = append(problems, "missing pod address "+a.String())
		}
	}
	routes, err := p.podRoutes(ph, podLink)
	if err != nil {
		return errors.Wrap(err, "netplumb")
	}
	idx := podLink.Attrs().Index
	if v4.IsValid() && !hasRoute(routes, netlink.Route{LinkIndex: idx, Dst: prefixToIPNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0)), Gw: addrToIP(p.cfg.Gateway4)}) {
		problems = append(problems, "missing pod IPv4 default route via "+p.cfg.Gateway4.String())
	}
	if v6.IsValid() && !hasRoute(routes, netlink.Route{LinkIndex: idx, Dst: prefixToIPNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0)), Gw: addrToIP(p.cfg.Gateway6)}) {
		problems = append(problems, "missing pod IPv6 default route via "+p.cfg.Gateway6.String())
	}
	hostRoutes, err := p.hostRoutes(hostLink.Attrs().Index)
	if err != nil {
		return errors.Wrap(err, "netplumb")
	}
	for _, a := range want {
		found := false
		for _, r := range hostRoutes {
			if dst, ok := ipNetToPrefix(r.Dst); ok && dst == hostPrefix(a) {
				found = true
				break
			}
		}
		if !found {
			problems = append(problems, "missing host route "+hostPrefix(a).String()+" dev "+name)
		}
	}
	if len(problems) > 0 {
		err := errors.Wrapf(ErrCheckFailed, "%s/%s: %s", pod.ContainerID, pod.IfName, strings.Join(problems, "; "))
		if mtuWrong {
			err = errors.Mark(err, ErrMTUMismatch)
		}
		return err
	}
	return nil
}
