package netplumb

import (
	"context"
	"crypto/sha1" //nolint:gosec // a name digest, not a security boundary
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/cockroachdb/errors"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Sentinel errors. Returned errors wrap them; test with errors.Is.
var (
	// ErrNetNSNotFound: the given network namespace path does not exist (or is not a
	// network namespace).
	ErrNetNSNotFound = errors.New("netplumb: network namespace not found")
	// ErrLinkNotFound: an expected link (host veth or pod interface) does not exist.
	ErrLinkNotFound = errors.New("netplumb: link not found")
	// ErrIfNameInUse: the pod namespace already has an interface of that name that is
	// not the peer of this pod's host veth.
	ErrIfNameInUse = errors.New("netplumb: interface name already in use in the pod namespace")
	// ErrCheckFailed: Check found the attachment different from what Setup makes.
	ErrCheckFailed = errors.New("netplumb: attachment does not match")
	// ErrMTUMismatch marks an ErrCheckFailed where an end of the pair has another MTU
	// than the one asked for.
	ErrMTUMismatch = errors.New("netplumb: MTU differs")
	// ErrNoDefaultRoute: the host namespace's main table has no default route through
	// an interface (UplinkMTU).
	ErrNoDefaultRoute = errors.New("netplumb: no default route")
	// ErrInvalidArgument: a malformed Pod, prefix, table or protocol.
	ErrInvalidArgument = errors.New("netplumb: invalid argument")
	// ErrRouteConflict: a route with the same destination exists in the table but with
	// another route protocol; Coil does not touch it.
	ErrRouteConflict = errors.New("netplumb: route owned by another protocol")
	// ErrNodeNetNS: the pod network namespace given is the node's own: the host
	// namespace, the one the process runs in, or the one of PID 1. Plumbing a "pod"
	// there would replace the node's default route and, on DEL, take it away.
	ErrNodeNetNS = errors.New("netplumb: the pod network namespace is the node's own")
)

// Defaults for Config.
const (
	DefaultRouteProtocol = 30
	// DefaultLinkGroup tags Coil's host veths ("C011"). DefaultLinkGroup+1 is the doomed
	// group used by TeardownMany, DefaultLinkGroup+2 the pending group of Prepare.
	DefaultLinkGroup uint32 = 0xC011
	// MainTable is the kernel's main routing table (254).
	MainTable = unix.RT_TABLE_MAIN
)

// Default gateway addresses put on every host veth.
var (
	DefaultGateway4 = netip.MustParseAddr("169.254.1.1")
	DefaultGateway6 = netip.MustParseAddr("fe80::1")
)

const maxDumpAttempts = 10

// Config configures a Plumber. The zero value is usable: every zero field gets its default.
type Config struct {
	// HostNetNS is the path of the node's network namespace; "" means the namespace the
	// process runs in.
	HostNetNS string
	// Gateway4 is the link-local IPv4 gateway put on each host veth (default 169.254.1.1).
	Gateway4 netip.Addr
	// Gateway6 is the link-local IPv6 gateway put on each host veth (default fe80::1).
	Gateway6 netip.Addr
	// RouteProtocol marks the routes Coil owns (default 30). Must be 1..255 and not 12
	// (BIRD's own).
	RouteProtocol int
	// LinkGroup tags Coil's host veths (default DefaultLinkGroup). LinkGroup+1 is
	// reserved for TeardownMany, LinkGroup+2 for Prepare.
	LinkGroup uint32
	// MTU of both veth ends when Pod.MTU is 0; 0 keeps the kernel default (1500).
	MTU int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Plumber plumbs pods into one host network namespace. It is safe for concurrent use;
// operations on different pods may run in parallel.
type Plumber struct {
	cfg    Config
	log    *slog.Logger
	hostNS netns.NsHandle
	// nodeNS are the namespaces a pod namespace must never be: the host namespace, the
	// process's own and PID 1's (device and inode of each).
	nodeNS map[nsID]string
	host   *netlink.Handle
	// raw is a netlink socket in the host namespace for requests the netlink library
	// does not offer (deleting a link group).
	raw *nl.SocketHandle

	manyMu sync.Mutex // serialises TeardownMany (the doomed group is shared)
}

// New opens netlink handles in the host namespace and switches forwarding on there.
// Close releases them.
func New(cfg Config) (*Plumber, error) {
	if !cfg.Gateway4.IsValid() {
		cfg.Gateway4 = DefaultGateway4
	}
	if !cfg.Gateway6.IsValid() {
		cfg.Gateway6 = DefaultGateway6
	}
	if !cfg.Gateway4.Is4() || !cfg.Gateway6.Is6() || cfg.Gateway6.Is4In6() {
		return nil, errors.Wrapf(ErrInvalidArgument, "gateways %s, %s: want one IPv4 and one IPv6 address", cfg.Gateway4, cfg.Gateway6)
	}
	if cfg.RouteProtocol == 0 {
		cfg.RouteProtocol = DefaultRouteProtocol
	}
	if cfg.RouteProtocol < 1 || cfg.RouteProtocol > 255 || cfg.RouteProtocol == unix.RTPROT_BIRD {
		return nil, errors.Wrapf(ErrInvalidArgument, "route protocol %d", cfg.RouteProtocol)
	}
	if cfg.LinkGroup == 0 {
		cfg.LinkGroup = DefaultLinkGroup
	}
	if cfg.LinkGroup >= ^uint32(0)-1 {
		return nil, errors.Wrapf(ErrInvalidArgument, "link group %d leaves no room for the doomed and pending groups", cfg.LinkGroup)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}

	var (
		hostNS netns.NsHandle
		err    error
	)
	if cfg.HostNetNS == "" {
		hostNS, err = netns.Get()
	} else {
		hostNS, err = openNetNS(cfg.HostNetNS)
	}
	if err != nil {
		return nil, errors.Wrap(err, "netplumb: open host namespace")
	}
	p := &Plumber{cfg: cfg, log: cfg.Logger, hostNS: hostNS}
	if p.nodeNS, err = nodeNamespaces(hostNS); err != nil {
		_ = hostNS.Close()
		return nil, err
	}
	p.host, err = netlink.NewHandleAt(hostNS, unix.NETLINK_ROUTE)
	if err != nil {
		_ = hostNS.Close()
		return nil, errors.Wrap(err, "netplumb: netlink handle in host namespace")
	}
	sock, err := nl.GetNetlinkSocketAt(hostNS, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		p.host.Close()
		_ = hostNS.Close()
		return nil, errors.Wrap(err, "netplumb: netlink socket in host namespace")
	}
	p.raw = &nl.SocketHandle{Socket: sock}
	if err := p.enableForwarding(); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// Close releases the handles. The kernel state stays as it is.
func (p *Plumber) Close() error {
	p.raw.Close()
	p.host.Close()
	return errors.Wrap(p.hostNS.Close(), "netplumb: close host namespace")
}

// Config returns the effective configuration (defaults filled in).
func (p *Plumber) Config() Config { return p.cfg }

// HostNetNSID identifies the host namespace the Plumber works in: its nsfs device and
// inode, "NS(dev:ino)". Two handles of one namespace have the same ID while it exists.
func (p *Plumber) HostNetNSID() string { return p.hostNS.UniqueId() }

// DoomedGroup is the link group TeardownMany uses for links about to be deleted.
func (p *Plumber) DoomedGroup() uint32 { return p.cfg.LinkGroup + 1 }

// PendingGroup is the link group of host veths that Prepare created and Finish has not
// configured yet.
func (p *Plumber) PendingGroup() uint32 { return p.cfg.LinkGroup + 2 }

// isCoilGroup tells whether g is one of Coil's link groups.
func (p *Plumber) isCoilGroup(g uint32) bool {
	return g == p.cfg.LinkGroup || g == p.DoomedGroup() || g == p.PendingGroup()
}

// HostVethName is the deterministic host-side veth name for a pod interface:
// "coil" + the first 11 hex digits of sha1(containerID + "/" + ifName), 15 characters
// (the kernel's IFNAMSIZ-1).
func HostVethName(containerID, ifName string) string {
	sum := sha1.Sum([]byte(containerID + "/" + ifName)) //nolint:gosec // naming only
	return "coil" + hex.EncodeToString(sum[:])[:11]
}

// enableForwarding switches on IPv4 and IPv6 forwarding in the host namespace.
func (p *Plumber) enableForwarding() error {
	write := func(ns.NetNS) error {
		for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			cur, err := os.ReadFile(f)
			if err == nil && len(cur) > 0 && cur[0] == '1' {
				continue
			}
			if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
				return errors.Wrapf(err, "netplumb: sysctl %s", f)
			}
		}
		return nil
	}
	var target ns.NetNS
	var err error
	if p.cfg.HostNetNS == "" {
		target, err = ns.GetCurrentNS()
	} else {
		target, err = ns.GetNS(p.cfg.HostNetNS)
	}
	if err != nil {
		return errors.Wrap(err, "netplumb: open host namespace for sysctls")
	}
	defer func() { _ = target.Close() }()
	return target.Do(write)
}

// openNetNS opens a network namespace by path, mapping a missing path to ErrNetNSNotFound.
func openNetNS(path string) (netns.NsHandle, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return netns.None(), errors.Wrapf(ErrNetNSNotFound, "%s", path)
		}
		return netns.None(), errors.Wrapf(err, "open netns %s", path)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(h), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		_ = h.Close()
		return netns.None(), errors.Wrapf(ErrNetNSNotFound, "%s is not a network namespace", path)
	}
	return h, nil
}

// nsID identifies a namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func fstatNS(fd int) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsID{}, err
	}
	return nsID{st.Dev, st.Ino}, nil
}

// nodeNamespaces lists the namespaces no pod may be given: the host namespace (what
// the Plumber plumbs), the namespace the process runs in ("/proc/self/ns/net", which a
// request may name and which coild would resolve to its own) and PID 1's (the machine's
// or the container's first process: never a pod). The last two are best effort.
func nodeNamespaces(host netns.NsHandle) (map[nsID]string, error) {
	id, err := fstatNS(int(host))
	if err != nil {
		return nil, errors.Wrap(err, "netplumb: stat host namespace")
	}
	out := map[nsID]string{id: "the node's network namespace (the host namespace coild plumbs)"}
	for path, what := range map[string]string{
		"/proc/self/ns/net": "coild's own network namespace",
		"/proc/1/ns/net":    "the network namespace of PID 1",
	} {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err == nil {
			if _, dup := out[nsID{st.Dev, st.Ino}]; !dup {
				out[nsID{st.Dev, st.Ino}] = what
			}
		}
	}
	return out, nil
}

// openPodNetNS opens a pod's network namespace: ErrNetNSNotFound as openNetNS, and
// ErrNodeNetNS when it is one of the node's own namespaces.
func (p *Plumber) openPodNetNS(path string) (netns.NsHandle, error) {
	h, err := openNetNS(path)
	if err != nil {
		return h, err
	}
	id, err := fstatNS(int(h))
	if err != nil {
		_ = h.Close()
		return netns.None(), errors.Wrapf(err, "netplumb: stat %s", path)
	}
	if what, ok := p.nodeNS[id]; ok {
		_ = h.Close()
		return netns.None(), errors.Wrapf(ErrNodeNetNS, "%s is %s (inode %d)", path, what, id.ino)
	}
	return h, nil
}

// CheckPodNetNS checks that path is a network namespace and not one of the node's own
// (ErrNetNSNotFound, ErrNodeNetNS), as Prepare and Check do, so a caller can refuse a
// request before acting on it. It changes nothing.
func (p *Plumber) CheckPodNetNS(path string) error {
	h, err := p.openPodNetNS(path)
	if err != nil {
		return err
	}
	return errors.Wrap(h.Close(), "netplumb: close pod namespace")
}

// retryDump runs a netlink dump, retrying while the kernel reports it interrupted.
func retryDump[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range maxDumpAttempts {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, errors.Wrapf(err, "netlink dump interrupted %d times", maxDumpAttempts)
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return errors.Wrap(err, "netplumb")
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	if bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), true
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func addrToIP(a netip.Addr) net.IP { return net.IP(a.AsSlice()) }
