package allocator

import (
	"context"
	"net/netip"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// ReleaseResult is the attachment an operator release took back.
type ReleaseResult struct {
	Node string
	projection.AttachKey
	projection.Assignment
	Reason string
}

// ReleaseAddress releases the attachment of node that holds addr (all its families: the
// attachment is the unit an address is held by), appending AddressReleased with reason
// to node's stream, as `coilctl address release` does. seq is the attachment's
// AddressAssigned sequence as the caller saw it when it decided (0: any): if addr is
// held by another attachment since, nothing is written and the error wraps
// events.ErrConflict; if addr is not held at all, ErrNotHeld.
//
// The append is not fenced on the node's liveness key: the node's coild may be alive. Its
// allocator takes the event in like any event it did not write (a conflict on its next
// append, or its watch), drops the attachment, and its reconciler deletes the veth (and
// with it the /32 route). Conflicts with the node's own appends are retried.
func (a *Admin) ReleaseAddress(ctx context.Context, node string, addr netip.Addr, seq uint64, reason string) (*ReleaseResult, error) {
	if err := events.ValidName(node); err != nil {
		return nil, errors.Wrap(err, "node")
	}
	stream := events.NodeStream(node)
	var bo backoff
	for {
		st, err := a.nodeState(ctx, stream)
		if err != nil {
			return nil, err
		}
		key, ok := st.Held[addr]
		if !ok {
			return nil, errors.Wrapf(ErrNotHeld, "address %s is not held on node %q (released meanwhile?)", addr, node)
		}
		asg := st.Attached[key]
		if seq != 0 && asg.Seq != seq {
			return nil, errors.Wrapf(events.ErrConflict, "address %s was released and assigned again meanwhile (now container %s, interface %s, since %s); look again",
				addr, key.ContainerID, key.IfName, asg.Since.UTC().Format("2006-01-02T15:04:05Z"))
		}
		ev := a.event(&events.AddressReleased{
			ContainerID: key.ContainerID, IfName: key.IfName, Pool: asg.Pool, Block: asg.Block, Addrs: asg.Addrs, Reason: reason,
		})
		// A fixed address: its claim in the pool stream ends in the same append.
		ps := events.PoolStream(asg.Pool)
		pool, err := a.poolBlocks(ctx, ps)
		if err != nil {
			return nil, err
		}
		var parts []events.Part
		if c, ok := pool.ClaimOf(asg.Addrs[0]); ok && c.Node == node && c.ContainerID == key.ContainerID && c.IfName == key.IfName {
			parts = []events.Part{{Stream: ps, Expected: pool.Head(), Events: []*events.Event{a.event(&events.AddressClaimReleased{
				Addrs: c.Addrs, Block: c.Block, Node: node, ContainerID: key.ContainerID, IfName: key.IfName, Reason: reason,
			})}}}
		}
		_, err = a.Log.Append(ctx, events.AppendRequest{Stream: stream, Expected: st.Head(), Events: []*events.Event{ev}, Parts: parts})
		switch {
		case err == nil:
			return &ReleaseResult{Node: node, AttachKey: key, Assignment: *asg, Reason: reason}, nil
		case errors.Is(err, events.ErrConflict):
			if werr := bo.wait(ctx); werr != nil {
				return nil, werr
			}
		default:
			return nil, errors.Wrapf(err, "release %s on node %q", addr, node)
		}
	}
}
