package daemon

import (
	"context"
	"net/netip"

	"github.com/coil-net/coil/exporter"
	"github.com/coil-net/coil/netplumb"
)

// Plumber is the kernel as coild uses it: the pod plumbing its handlers and reconciler
// call, and the export table's route primitives (exporter.Routes, for the exporter).
// The real one is *netplumb.Plumber (through kernel, below), which documents each
// method; a test without root gives Config.Plumber a fake that records calls and
// injects failures. Errors wrap netplumb's sentinels (ErrNetNSNotFound, ErrNodeNetNS,
// ErrIfNameInUse, ...): coild maps them to CNI codes (cniError).
type Plumber interface {
	exporter.Routes
	// HostNetNSID identifies the node namespace this Plumber works on (the node record
	// keeps it: a veth missing from another namespace proves nothing).
	HostNetNSID() string
	// CheckPodNetNS fails unless path is a pod's network namespace: missing
	// (ErrNetNSNotFound) or one of the node's own (ErrNodeNetNS). Nothing is changed.
	CheckPodNetNS(path string) error
	// Prepare creates (or finds) the pod's veth pair, without addresses or routes, in
	// the pending link group. A nil Pending comes with an error.
	Prepare(ctx context.Context, pod netplumb.Pod) (Pending, error)
	// Check verifies the pod's plumbing is as Finish left it.
	Check(ctx context.Context, pod netplumb.Pod) error
	// TeardownMany deletes the named host veths that are in Coil's link groups, in one
	// kernel call; names that do not exist are skipped. Idempotent.
	TeardownMany(ctx context.Context, hostVeths []string) error
	// List returns Coil's host veths (Pending: prepared, never finished).
	List(ctx context.Context) ([]netplumb.HostLink, error)
	// UplinkMTU is the MTU of the node's default-route interface (ErrNoDefaultRoute
	// when there is none): the pods' MTU when neither the netconf nor --mtu sets one.
	UplinkMTU() (netplumb.Uplink, error)
	// HostRoutes lists Coil's pod routes in the node's main table (for GET /ipam).
	HostRoutes(ctx context.Context) ([]netplumb.HostRoute, error)
}

// Pending is a prepared veth pair (Plumber.Prepare): Finish puts the addresses and
// routes on it, Abort deletes it.
type Pending interface {
	Finish(ctx context.Context, addrs []netip.Addr) (netplumb.Attachment, error)
	Abort() error
}

// kernel is the real Plumber: netplumb's, with Prepare returning the interface.
type kernel struct{ *netplumb.Plumber }

var _ Plumber = kernel{}

func (k kernel) Prepare(ctx context.Context, pod netplumb.Pod) (Pending, error) {
	pd, err := k.Plumber.Prepare(ctx, pod)
	if pd == nil {
		return nil, err // never a non-nil interface holding a nil pointer
	}
	return pd, err
}
