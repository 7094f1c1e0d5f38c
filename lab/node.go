package lab

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/errors"
)

// Node is one simulated node: a network namespace with a veth (Link) on the fabric and a
// BIRD peering with the other nodes.
type Node struct {
	Name        string     // "n0", "n1", ...
	Index       int        // position in Lab.Nodes
	NetNS       string     // namespace name
	NetNSPath   string     // /var/run/netns/NAME
	Link        string     // the node's fabric interface inside NetNS ("fab0")
	FabricAddr  netip.Addr // IPv4 address on Link; also BIRD's router id
	FabricAddr6 netip.Addr // IPv6 address on Link (invalid when IPv6 is disabled)
	Dir         string     // the node's work directory (bird.conf, bird.ctl, logs, CNI state)
	BirdConf    string     // path of the generated BIRD config
	BirdSock    string     // BIRD control socket (birdc -s)
	Bird        *Process   // the node's BIRD

	lab      *Lab
	hostAddr int
}

// Exec runs `ip netns exec <ns> name args...` and returns its stdout. A non-zero exit is an
// error marked ErrCommand that carries stderr.
func (n *Node) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	return run(ctx, nil, "ip", append([]string{"netns", "exec", n.NetNS, name}, args...)...)
}

// IP runs `ip -n <ns> args...` (cheaper than Exec for ip commands) and returns stdout.
func (n *Node) IP(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, nil, "ip", append([]string{"-n", n.NetNS}, args...)...)
}

// Route is one kernel route as `ip -j route` shows it.
type Route struct {
	Dst      netip.Prefix // "default" is 0.0.0.0/0 or ::/0
	Type     string       // "unicast", "blackhole", "unreachable", ...
	Gateway  netip.Addr   // invalid when there is none
	Dev      string
	Protocol string // as ip names it: "bird", "kernel", "static", or a number such as "30"
	Metric   int
}

type ipRoute struct {
	Type     string `json:"type"`
	Dst      string `json:"dst"`
	Gateway  string `json:"gateway"`
	Dev      string `json:"dev"`
	Protocol string `json:"protocol"`
	Metric   int    `json:"metric"`
}

// Routes lists the IPv4 routes of kernel table `table` (254 is main) in the node namespace.
// An empty table is an empty slice, not an error.
func (n *Node) Routes(ctx context.Context, table int) ([]Route, error) {
	return n.routes(ctx, "-4", table)
}

// Routes6 is Routes for IPv6.
func (n *Node) Routes6(ctx context.Context, table int) ([]Route, error) {
	return n.routes(ctx, "-6", table)
}

// RoutesOf lists the IPv4 routes of kernel table `table` that protocol proto wrote (as
// ip names it: "bird", "30"), sorted by destination.
func (n *Node) RoutesOf(ctx context.Context, table int, proto string) ([]Route, error) {
	rs, err := n.Routes(ctx, table)
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range rs {
		if r.Protocol == proto {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return ComparePrefix(a.Dst, b.Dst) })
	return out, nil
}

// BGPRoutes lists the IPv4 routes BIRD installed in the node's main table (protocol
// bird), sorted, with their gateways: one per block of the other nodes.
func (n *Node) BGPRoutes(ctx context.Context) ([]Route, error) {
	return n.RoutesOf(ctx, 254, "bird")
}

// ExportedBlocks lists the node's IPv4 blocks as coild exports them: its export table
// (DefaultExportTable, protocol DefaultRouteProtocol), sorted.
func (n *Node) ExportedBlocks(ctx context.Context) ([]netip.Prefix, error) {
	rs, err := n.RoutesOf(ctx, DefaultExportTable, strconv.Itoa(DefaultRouteProtocol))
	if err != nil {
		return nil, err
	}
	var ps []netip.Prefix
	for _, r := range rs {
		ps = append(ps, r.Dst)
	}
	return ps, nil
}

// ComparePrefix orders prefixes by address, then by length.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func (n *Node) routes(ctx context.Context, family string, table int) ([]Route, error) {
	out, err := n.IP(ctx, family, "-j", "route", "show", "table", strconv.Itoa(table))
	if err != nil && strings.Contains(err.Error(), "FIB table does not exist") {
		// The kernel makes a table with its first route: none yet is an empty table.
		return []Route{}, nil
	}
	if err != nil {
		return nil, err
	}
	return parseRoutes(out, family == "-6")
}

func parseRoutes(out []byte, v6 bool) ([]Route, error) {
	out = []byte(strings.TrimSpace(string(out)))
	if len(out) == 0 {
		return []Route{}, nil
	}
	var raw []ipRoute
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, errors.Wrapf(err, "lab: parse ip -j route: %q", out)
	}
	routes := make([]Route, 0, len(raw))
	for _, r := range raw {
		rt := Route{Type: r.Type, Dev: r.Dev, Protocol: r.Protocol, Metric: r.Metric}
		if rt.Type == "" {
			rt.Type = "unicast"
		}
		switch {
		case r.Dst == "default" && v6:
			rt.Dst = netip.MustParsePrefix("::/0")
		case r.Dst == "default":
			rt.Dst = netip.MustParsePrefix("0.0.0.0/0")
		case strings.Contains(r.Dst, "/"):
			p, err := netip.ParsePrefix(r.Dst)
			if err != nil {
				return nil, errors.Wrapf(err, "lab: parse route dst %q", r.Dst)
			}
			rt.Dst = p
		default:
			a, err := netip.ParseAddr(r.Dst)
			if err != nil {
				return nil, errors.Wrapf(err, "lab: parse route dst %q", r.Dst)
			}
			rt.Dst = netip.PrefixFrom(a, a.BitLen())
		}
		if r.Gateway != "" {
			g, err := netip.ParseAddr(r.Gateway)
			if err != nil {
				return nil, errors.Wrapf(err, "lab: parse gateway %q", r.Gateway)
			}
			rt.Gateway = g
		}
		routes = append(routes, rt)
	}
	return routes, nil
}

// Birdc runs birdc against the node's BIRD and returns its output.
func (n *Node) Birdc(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, nil, "birdc", append([]string{"-s", n.BirdSock}, args...)...)
}

// BGPSession is one line of `birdc show protocols` for a BGP protocol.
type BGPSession struct {
	Name  string // protocol name = peer node name
	State string // "up", "start", ...
	Info  string // "Established", "Active", "Connect", ...
}

// Established reports whether the session is up.
func (s BGPSession) Established() bool { return s.State == "up" && s.Info == "Established" }

// BGPSessions lists the node's BGP sessions as BIRD reports them.
func (n *Node) BGPSessions(ctx context.Context) ([]BGPSession, error) {
	out, err := n.Birdc(ctx, "show", "protocols")
	if err != nil {
		return nil, err
	}
	return parseProtocols(string(out)), nil
}

func parseProtocols(out string) []BGPSession {
	var s []BGPSession
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[1] != "BGP" {
			continue
		}
		sess := BGPSession{Name: f[0], State: f[3]}
		if len(f) >= 6 {
			sess.Info = strings.Join(f[5:], " ")
		}
		s = append(s, sess)
	}
	return s
}

// CNI runs `cnitool <cmd> <netName> <podNSPath>` inside the node namespace, in a private
// mount namespace where /var/lib is the node's own directory (Dir/varlib), so cnitool's
// cache (/var/lib/cni) and host-local's state stay inside the lab. netconfDir is
// NETCONFPATH, cniPath is CNI_PATH; env adds variables (CNI_ARGS=..., CNI_IFNAME=...).
// It returns cnitool's stdout (the CNI result for add).
func (n *Node) CNI(ctx context.Context, cmd, netconfDir, cniPath, netName, podNSPath string, env ...string) ([]byte, error) {
	cnitool, err := lookTool("cnitool")
	if err != nil {
		return nil, err
	}
	varlib := filepath.Join(n.Dir, "varlib")
	if err := os.MkdirAll(varlib, 0o755); err != nil {
		return nil, errors.Wrap(err, "lab: cni state dir")
	}
	args := []string{"-m", "sh", "-c", `d=$1; shift; mount --bind "$d" /var/lib && exec "$@"`, "sh", varlib,
		"env", "NETCONFPATH=" + netconfDir, "CNI_PATH=" + cniPath}
	args = append(args, env...)
	args = append(args, cnitool, cmd, netName, podNSPath)
	return n.Exec(ctx, "unshare", args...)
}

// lookTool finds a command on PATH or in the repository's .tools/bin (scripts/setup.sh).
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", errors.Wrap(err, "lab: getwd")
	}
	for {
		p := filepath.Join(dir, ".tools", "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.Wrapf(ErrCommand, "lab: %s not found on PATH or in .tools/bin (run scripts/setup.sh)", name)
		}
		dir = parent
	}
}

// CNIResult is what the lab's users read from an ADD result: the pod's addresses and the
// host-side interface (the first interface without a sandbox; "" when none).
type CNIResult struct {
	Addrs  []netip.Addr
	HostIf string
}

// ParseCNIResult reads the result cnitool printed for an ADD.
func ParseCNIResult(out []byte) (CNIResult, error) {
	var r struct {
		Interfaces []struct {
			Name    string `json:"name"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	var res CNIResult
	if err := json.Unmarshal(out, &r); err != nil {
		return res, errors.Wrapf(err, "lab: parse CNI result %q", out)
	}
	for _, ip := range r.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			return res, errors.Wrapf(err, "lab: CNI result address %q", ip.Address)
		}
		res.Addrs = append(res.Addrs, p.Addr())
	}
	for _, i := range r.Interfaces {
		if i.Sandbox == "" {
			res.HostIf = i.Name
			break
		}
	}
	return res, nil
}
