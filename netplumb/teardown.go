package netplumb

import (
	"context"
	"net"
	"net/netip"
	"slices"

	"github.com/cockroachdb/errors"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Teardown deletes the host veth of a pod interface, which removes the pair, the pod's
// addresses and the host routes through it. It returns once the link is gone, so the
// caller may release the addresses afterwards.
//
// Idempotent: it succeeds when the link is already gone, also when the pod namespace has
// been deleted (the kernel then destroys the pair by itself, possibly a little later;
// Teardown deletes whatever is still there). It refuses (ErrInvalidArgument) to delete a
// link of that name that is not a veth in one of Coil's link groups.
func (p *Plumber) Teardown(ctx context.Context, containerID, ifName string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	name := HostVethName(containerID, ifName)
	link, err := p.host.LinkByName(name)
	if isNotFound(err) {
		return nil
	} else if err != nil {
		return errors.Wrapf(err, "netplumb: look up %s", name)
	}
	if link.Type() != "veth" || !p.isCoilGroup(link.Attrs().Group) {
		return errors.Wrapf(ErrInvalidArgument, "%s (type %s, group %d) is not a Coil veth", name, link.Type(), link.Attrs().Group)
	}
	if err := p.host.LinkDel(link); err != nil && !isNotFound(err) {
		return errors.Wrapf(err, "netplumb: delete %s", name)
	}
	return nil
}

// TeardownMany deletes several host veths (by name, as in Attachment.HostVeth and
// HostLink.Name) in one kernel call: it moves them to the doomed link group and deletes
// that group, which batches the expensive part of link deletion (one RCU grace period for
// all links instead of one per link). Names that do not exist are skipped; names that
// are not Coil veths (not a veth, or outside Coil's link groups) are refused with
// ErrInvalidArgument before anything is deleted. It returns once the links are gone.
// Idempotent.
func (p *Plumber) TeardownMany(ctx context.Context, hostVeths []string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	p.manyMu.Lock()
	defer p.manyMu.Unlock()

	doomed := p.DoomedGroup()
	var links []netlink.Link
	for _, name := range hostVeths {
		link, err := p.host.LinkByName(name)
		if isNotFound(err) {
			continue
		} else if err != nil {
			return errors.Wrapf(err, "netplumb: look up %s", name)
		}
		g := link.Attrs().Group
		if link.Type() != "veth" || !p.isCoilGroup(g) {
			return errors.Wrapf(ErrInvalidArgument, "%s (type %s, group %d) is not a Coil veth", name, link.Type(), g)
		}
		links = append(links, link)
	}
	if len(links) == 0 {
		return nil
	}
	if len(links) == 1 {
		if err := p.host.LinkDel(links[0]); err != nil && !isNotFound(err) {
			return errors.Wrapf(err, "netplumb: delete %s", links[0].Attrs().Name)
		}
		return nil
	}
	moved := 0
	for _, link := range links {
		if link.Attrs().Group == doomed {
			moved++
			continue
		}
		if err := p.host.LinkSetGroup(link, int(doomed)); err != nil {
			if isNotFound(err) {
				continue
			}
			return errors.Wrapf(err, "netplumb: doom %s", link.Attrs().Name)
		}
		moved++
	}
	if moved == 0 {
		return nil
	}
	if err := p.deleteGroup(doomed); err != nil {
		return errors.Wrapf(err, "netplumb: delete link group %d (%d links)", doomed, moved)
	}
	return nil
}

// deleteGroup deletes every link of a group in the host namespace in one RTM_DELLINK
// (ifindex 0, IFLA_GROUP). No link in the group is success.
func (p *Plumber) deleteGroup(group uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: p.raw}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// HostLink is one of Coil's host veths as found in the host namespace.
type HostLink struct {
	Name  string
	Index int
	MAC   net.HardwareAddr
	Up    bool
	// Doomed is true when the link sits in the doomed group (a TeardownMany that did not
	// finish); it should be deleted.
	Doomed bool
	// Pending is true when the link sits in the pending group: Prepare made it and Finish
	// has not configured it (yet, or ever when the Setup was interrupted).
	Pending bool
	// PeerNetNSID is the peer's namespace id as seen from the host namespace, -1 if the
	// kernel reports none.
	PeerNetNSID int
	// Routes are Coil's routes (main table, Config.RouteProtocol) through this link.
	Routes []netip.Prefix
}

// List returns Coil's host veths in the host namespace (link group Config.LinkGroup, the
// doomed or the pending group) with Coil's routes through each, sorted by name. A link that is not
// a veth is never reported. Routes of Coil's protocol in the main table through other
// links are not reported.
func (p *Plumber) List(ctx context.Context) ([]HostLink, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	links, err := retryDump(p.host.LinkList)
	if err != nil {
		return nil, errors.Wrap(err, "netplumb: list links")
	}
	doomed := p.DoomedGroup()
	byIndex := map[int]*HostLink{}
	var out []*HostLink
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || !p.isCoilGroup(a.Group) {
			continue
		}
		hl := &HostLink{
			Name:        a.Name,
			Index:       a.Index,
			MAC:         slices.Clone(a.HardwareAddr),
			Up:          a.Flags&net.FlagUp != 0,
			Doomed:      a.Group == doomed,
			Pending:     a.Group == p.PendingGroup(),
			PeerNetNSID: a.NetNsID,
		}
		byIndex[a.Index] = hl
		out = append(out, hl)
	}
	routes, err := p.hostRoutes(0)
	if err != nil {
		return nil, errors.Wrap(err, "netplumb")
	}
	for _, r := range routes {
		hl := byIndex[r.LinkIndex]
		if hl == nil {
			continue
		}
		if dst, ok := ipNetToPrefix(r.Dst); ok {
			hl.Routes = append(hl.Routes, dst)
		}
	}
	res := make([]HostLink, 0, len(out))
	for _, hl := range out {
		slices.SortFunc(hl.Routes, comparePrefix)
		res = append(res, *hl)
	}
	slices.SortFunc(res, func(a, b HostLink) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return res, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
