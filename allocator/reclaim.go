package allocator

import (
	"context"
	"sort"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// ReclaimResult says what a reclaim did.
type ReclaimResult struct {
	Node      string
	Released  int            // addresses released
	Reclaimed map[string]int // blocks reclaimed per pool
	// ClaimsEnded counts the node's fixed-address claims ended (AddressClaimReleased).
	ClaimsEnded int
}

// Reclaim takes a dead node's addresses and blocks back and retires it. Every append is
// conditioned on the node's liveness key being absent (aliveKey), so a node whose lease
// still lives is never reclaimed (ErrNodeAlive), and a node that comes back afterwards
// starts from a state without those blocks. Reclaim is idempotent.
func (a *Admin) Reclaim(ctx context.Context, node, aliveKey, reason string) (*ReclaimResult, error) {
	if err := events.ValidName(node); err != nil {
		return nil, errors.Wrap(err, "node")
	}
	res := &ReclaimResult{Node: node, Reclaimed: map[string]int{}}
	cond := []events.Condition{{Key: aliveKey, Absent: true}}
	fenced := func(err error) error {
		if errors.Is(err, events.ErrFenced) {
			return errors.Wrapf(ErrNodeAlive, "node %q still holds its lease (%s); reclaim only a node whose coild is gone", node, aliveKey)
		}
		return err
	}
	// 1. Release the node's addresses and retire it, on its own stream.
	stream := events.NodeStream(node)
	var bo backoff
	for {
		st, err := a.nodeState(ctx, stream)
		if err != nil {
			return nil, err
		}
		if st.Head().Seq == 0 {
			break // never registered: nothing on its stream
		}
		var evs []*events.Event
		for key, asg := range st.Attached {
			evs = append(evs, a.event(&events.AddressReleased{
				ContainerID: key.ContainerID, IfName: key.IfName, Pool: asg.Pool, Block: asg.Block, Addrs: asg.Addrs, Reason: "node reclaimed: " + reason,
			}))
		}
		if !st.Retired {
			evs = append(evs, a.event(&events.NodeRetired{Node: node, Reason: reason}))
		}
		if len(evs) == 0 {
			break
		}
		if len(evs) > events.MaxBatch {
			evs = evs[:events.MaxBatch]
		}
		_, err = a.Log.Append(ctx, events.AppendRequest{
			Stream: stream, Expected: st.Head(), Events: evs, Conditions: cond,
		})
		switch {
		case err == nil:
			for _, e := range evs {
				if _, ok := e.Payload.(*events.AddressReleased); ok {
					res.Released++
				}
			}
			continue // another round if the batch was cut
		case errors.Is(err, events.ErrConflict):
			if werr := bo.wait(ctx); werr != nil {
				return nil, werr
			}
			continue
		default:
			return nil, errors.Wrapf(fenced(err), "retire node %q", node)
		}
	}
	// 2. Reclaim its blocks of split pools: its node stream records them; each goes in
	// one append with its block stream.
	if _, err := a.reclaimSplit(ctx, node, reason, cond, res); err != nil {
		return nil, errors.Wrapf(fenced(err), "reclaim blocks of %q", node)
	}
	// 3. Reclaim its blocks in every pool stream.
	heads, _, err := a.Log.Streams(ctx, "pool/", 0)
	if err != nil {
		return nil, errors.Wrap(err, "list pools")
	}
	for ps := range heads {
		_, pool := ps.Kind()
		bo = backoff{}
		for {
			b, err := a.poolBlocks(ctx, ps)
			if err != nil {
				return nil, err
			}
			owned := b.OwnedBy(node)
			claims := b.ClaimsBy(node)
			if len(owned) == 0 && len(claims) == 0 {
				break
			}
			var evs []*events.Event
			// The node's fixed-address claims end with it (its attachments were
			// released in step 1), so the addresses may be claimed again at once.
			for _, c := range claims {
				if len(evs) == events.MaxBatch {
					break
				}
				evs = append(evs, a.event(&events.AddressClaimReleased{
					Addrs: c.Addrs, Block: c.Block, Node: c.Node, ContainerID: c.ContainerID, IfName: c.IfName,
					Reason: "node reclaimed: " + reason,
				}))
			}
			blocks := 0
			for _, idx := range owned {
				if len(evs) == events.MaxBatch {
					break
				}
				evs = append(evs, a.event(&events.BlockReclaimed{Index: idx, Node: node, Reason: reason}))
				blocks++
			}
			_, err = a.Log.Append(ctx, events.AppendRequest{
				Stream: ps, Expected: b.Head(), Events: evs, Conditions: cond,
			})
			switch {
			case err == nil:
				if blocks > 0 {
					res.Reclaimed[pool] += blocks
				}
				res.ClaimsEnded += len(evs) - blocks
			case errors.Is(err, events.ErrConflict):
				if werr := bo.wait(ctx); werr != nil {
					return nil, werr
				}
			default:
				return nil, errors.Wrapf(fenced(err), "reclaim blocks of %q in pool %q", node, pool)
			}
		}
	}
	return res, nil
}

// reclaimSplit reclaims the node's blocks of split pools, as its node stream records
// them: NodeBlockRemoved in its stream and BlockReclaimed in each block's, one append per
// chunk, fenced like the rest of the reclaim. It returns how many it reclaimed.
func (a *Admin) reclaimSplit(ctx context.Context, node, reason string, cond []events.Condition, res *ReclaimResult) (int, error) {
	stream := events.NodeStream(node)
	total := 0
	var bo backoff
	for {
		st := projection.NewState()
		if _, err := events.ReadFrom(ctx, a.Log, stream, 0, st.Apply); err != nil {
			return total, errors.Wrapf(err, "read %s", stream)
		}
		me := st.Nodes[node]
		if me == nil || len(me.Blocks) == 0 {
			return total, nil
		}
		refs := make([]projection.BlockRef, 0, len(me.Blocks))
		for ref := range me.Blocks {
			refs = append(refs, ref)
		}
		sort.Slice(refs, func(i, j int) bool {
			if refs[i].Pool != refs[j].Pool {
				return refs[i].Pool < refs[j].Pool
			}
			return refs[i].Index < refs[j].Index
		})
		refs = refs[:min(len(refs), maxBlocksPerAppend)]
		streams := make([]events.Stream, len(refs))
		for i, ref := range refs {
			streams[i] = events.BlockStream(ref.Pool, ref.Index)
		}
		if err := readStreams(ctx, a.Log, streams, 0, st); err != nil {
			return total, err
		}
		var evs []*events.Event
		var parts []events.Part
		for i, ref := range refs {
			evs = append(evs, a.event(&events.NodeBlockRemoved{Pool: ref.Pool, Index: ref.Index, Reason: "node reclaimed: " + reason}))
			parts = append(parts, events.Part{Stream: streams[i], Expected: st.Head(streams[i]),
				Events: []*events.Event{a.event(&events.BlockReclaimed{Index: ref.Index, Node: node, Reason: reason})}})
		}
		_, err := a.Log.Append(ctx, events.AppendRequest{Stream: stream, Expected: st.Head(stream), Events: evs, Parts: parts, Conditions: cond})
		switch {
		case err == nil:
			for _, ref := range refs {
				res.Reclaimed[ref.Pool]++
			}
			total += len(refs)
		case errors.Is(err, events.ErrConflict):
			if werr := bo.wait(ctx); werr != nil {
				return total, werr
			}
		default:
			return total, err
		}
	}
}
