package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/coil-net/coil/cniproto"
)

// supportedVersions are the CNI spec versions coil speaks. CHECK needs 0.4.0 and GC
// and STATUS need 1.1.0; skel rejects older configurations for those with code 1.
var supportedVersions = version.PluginSupports("0.3.1", "0.4.0", "1.0.0", "1.1.0")

// buildVersion is set with -ldflags "-X main.buildVersion=...".
var buildVersion = "dev"

func main() {
	if os.Getenv("CNI_COMMAND") == "DEL" {
		// skel fails a DEL whose CNI_NETNS is the plugin's own namespace (its code 8, after
		// the DEL has run). coil's DEL never uses CNI_NETNS, and the DEL that follows an
		// ADD refused for naming the node's namespace must succeed, or the runtime retries
		// it for ever. (ADD and CHECK refuse that namespace themselves, before coild.)
		_ = os.Setenv("CNI_NETNS_OVERRIDE", "1")
	}
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}, supportedVersions, "CNI plugin coil "+buildVersion)
}

// Every command returns a *types.Error (skel prints it unchanged and exits 1).

// setup parses the call shared by ADD, DEL and CHECK and validates the request with the
// rules coild applies too (cniproto.Request.Validate).
func setup(o op, args *skel.CmdArgs) (*netConf, *cniproto.Request, *types.Error) {
	conf, e := parseConfig(args.StdinData)
	if e != nil {
		return nil, nil, e
	}
	pod, e := parseArgs(args.Args)
	if e != nil {
		return nil, nil, e
	}
	req := &cniproto.Request{
		ContainerID:  args.ContainerID,
		NetNS:        args.Netns,
		IfName:       args.IfName,
		Pool:         conf.Pool,
		MTU:          conf.MTU,
		PodNamespace: pod.Namespace,
		PodName:      pod.Name,
		PodUID:       pod.UID,
	}
	if o == opAdd {
		req.IPs = conf.IPs // the "ips" capability asks for fixed addresses on ADD only
	}
	if e := req.Validate(strings.ToLower(string(o))); e != nil {
		return nil, nil, types.NewError(e.Code, e.Msg, e.Details)
	}
	if o != opDel && isOwnNetNS(args.Netns) {
		// The runtime runs plugins in the node's namespace: a pod's cannot be the same.
		// (coild checks this too, against its own namespace; DEL is not refused, so
		// that the runtime can clean up after the refused ADD.)
		return nil, nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			cniproto.FieldError("CNI_NETNS", args.Netns, errors.New("it is the node's own network namespace (the one coil runs in), not a pod's")), "")
	}
	return conf, req, nil
}

// isOwnNetNS reports whether path is the network namespace the plugin runs in (same
// nsfs device and inode). A path that cannot be opened is left to coild to report.
func isOwnNetNS(path string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(path, &a) != nil || syscall.Stat("/proc/self/ns/net", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

func client(conf *netConf) (*cniproto.Client, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	return cniproto.NewClient(conf.Socket, conf.Timeout), ctx, cancel
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, req, e := setup(opAdd, args)
	if e != nil {
		return e
	}
	c, ctx, cancel := client(conf)
	defer cancel()
	res, err := c.Add(ctx, req)
	if err != nil {
		return toCNIError(opAdd, err)
	}
	result, err := buildResult(res, args.IfName, args.Netns)
	if err != nil {
		// coild answered, but not sensibly: ADD failed and the runtime will DEL.
		return types.NewError(types.ErrInternal, "coild returned an unusable ADD result", err.Error())
	}
	if err := types.PrintResult(result, conf.CNIVersion); err != nil {
		return types.NewError(types.ErrIOFailure,
			fmt.Sprintf("cannot print the result as CNI %s", conf.CNIVersion), err.Error())
	}
	return nil
}

func cmdDel(args *skel.CmdArgs) error {
	conf, req, e := setup(opDel, args)
	if e != nil {
		return e
	}
	c, ctx, cancel := client(conf)
	defer cancel()
	if err := c.Del(ctx, req); err != nil {
		var pe *cniproto.Error
		if errors.As(err, &pe) && pe.Code == cniproto.CodeUnknownContainer {
			return nil // DEL of an unknown attachment is success (CNI spec)
		}
		return toCNIError(opDel, err)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, req, e := setup(opCheck, args)
	if e != nil {
		return e
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs \"prevResult\" in the network config", "")
	}
	prev, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "cannot convert \"prevResult\" to CNI 1.0", err.Error())
	}
	for _, ip := range prev.IPs {
		a, ok := addrOf(ip.Address.IP)
		if !ok {
			return types.NewError(types.ErrDecodingFailure,
				fmt.Sprintf("bad address %q in \"prevResult\"", ip.Address.String()), "")
		}
		req.PrevAddrs = append(req.PrevAddrs, a)
	}
	c, ctx, cancel := client(conf)
	defer cancel()
	if err := c.Check(ctx, req); err != nil {
		return toCNIError(opCheck, err)
	}
	return nil
}

func cmdGC(args *skel.CmdArgs) error {
	conf, e := parseConfig(args.StdinData)
	if e != nil {
		return e
	}
	if conf.ValidAttachments == nil {
		// No list: the runtime (e.g. `cnitool gc`) cannot say what is valid, so
		// releasing anything would be a guess. Doing nothing is the safe answer.
		return nil
	}
	c, ctx, cancel := client(conf)
	defer cancel()
	if err := c.GC(ctx, &cniproto.GCRequest{ValidAttachments: conf.ValidAttachments}); err != nil {
		return toCNIError(opGC, err)
	}
	return nil
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, e := parseConfig(args.StdinData)
	if e != nil {
		return e
	}
	c, ctx, cancel := client(conf)
	defer cancel()
	if err := c.Status(ctx); err != nil {
		return toCNIError(opStatus, err)
	}
	return nil
}

// addrOf converts a net.IP to a netip.Addr, a 4-in-6 address unmapped.
func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
