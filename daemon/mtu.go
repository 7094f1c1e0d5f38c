package daemon

import (
	"context"
	"fmt"
	"strconv"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/netplumb"
)

// The MTU of a pod's veth pair (both ends), first that applies:
//  1. the netconf "mtu" of the request;
//  2. coild's --mtu (Config.MTU);
//  3. auto: the MTU of the interface of the node's default route (netplumb.UplinkMTU),
//     read at start and again every --reconcile-interval, never during an ADD; with no
//     default route, 1500 (logged).
//
// A value below 1280 for a pod whose pool has IPv6 is refused, naming where it came from
// (docs/cni.md, "MTU").

// fallbackMTU is the MTU pods get when nothing is configured and the node has no default
// route: Ethernet's.
const fallbackMTU = 1500

// mtuChoice is an MTU and where it came from, for messages.
type mtuChoice struct {
	mtu    int
	source string
}

// podMTU returns the MTU of a request's pod and its source.
func (d *Daemon) podMTU(req *cniproto.Request) mtuChoice {
	switch {
	case req.MTU != 0:
		return mtuChoice{req.MTU, `netconf "mtu"`}
	case d.cfg.MTU != 0:
		return mtuChoice{d.cfg.MTU, "coild --mtu"}
	}
	if c := d.autoMTU.Load(); c != nil {
		return *c
	}
	return mtuChoice{fallbackMTU, "default (the node's default route not read yet)"}
}

// checkMTU refuses an MTU below IPv6's minimum for a pod that gets IPv6.
func checkMTU(c mtuChoice, ipv6 bool, pool string) error {
	if err := cniproto.ValidMTU(c.mtu, ipv6); err != nil {
		why := ""
		if ipv6 {
			why = ": pool " + quote(pool) + " has IPv6"
		}
		return cniproto.NewError(cniproto.CodeInvalidNetworkConfig,
			fmt.Sprintf("invalid MTU %d from %s: %v%s", c.mtu, c.source, err, why),
			"refused before anything was allocated: set \"mtu\" in the network config (or coild --mtu) to "+strconv.Itoa(cniproto.MinMTU6)+" or more")
	}
	return nil
}

// refreshAutoMTU reads the MTU of the node's default route when coild has no --mtu, and
// logs when it changes.
func (d *Daemon) refreshAutoMTU() {
	if d.cfg.MTU != 0 {
		return
	}
	var c mtuChoice
	u, err := d.plumber.UplinkMTU()
	switch {
	case errors.Is(err, netplumb.ErrNoDefaultRoute):
		c = mtuChoice{fallbackMTU, "default (the node has no default route)"}
	case err != nil:
		if prev := d.autoMTU.Load(); prev != nil {
			d.log.Warn("cannot read the MTU of the node's default route; pods keep the last one", "mtu", prev.mtu, "err", err)
			return
		}
		c = mtuChoice{fallbackMTU, "default (the node's default route could not be read)"}
	case cniproto.ValidMTU(u.MTU, false) != nil:
		c = mtuChoice{fallbackMTU, fmt.Sprintf("default (%s's MTU %d is out of range)", u.Link, u.MTU)}
	default:
		c = mtuChoice{u.MTU, fmt.Sprintf("auto: %s, the node's %s default route", u.Link, u.Family)}
	}
	prev := d.autoMTU.Swap(&c)
	if prev != nil && *prev == c {
		return
	}
	if err != nil {
		d.log.Warn("pods get MTU 1500: no MTU configured (netconf \"mtu\", --mtu) and none read from the node", "source", c.source, "err", err)
		return
	}
	d.log.Info("pods' MTU when none is configured", "mtu", c.mtu, "source", c.source)
}

// mtuLoop refreshes the auto MTU every reconcile interval.
func (d *Daemon) mtuLoop(ctx context.Context) {
	if d.cfg.MTU != 0 {
		return
	}
	every(ctx, d.cfg.ReconcileEvery, nil, d.refreshAutoMTU)
}
