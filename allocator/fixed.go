package allocator

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/safetext"
	"github.com/coil-net/coil/projection"
)

// Fixed addresses (docs/design.md, "Fixed addresses"). A pod that asks for an address
// (annotation coil.cybozu.com/ip, or the CNI "ips" capability) gets it by a claim: in one
// transaction, AddressAssigned in the claiming node's stream (so DEL, GC, the reconciler
// and the leak collector treat it like any attachment) and AddressClaimed in the pool's
// stream, which every node follows. The address may lie in a block of another node or
// of none; then the claiming node exports it as a host route (/32, /128) and BGP carries
// it next to the block's route, and the longer prefix wins.
//
// Races. The claim reads the block owner's node stream and guards its head: if the owner
// handed the address out meanwhile, the append conflicts and the claim looks again. The
// owner, for its part, guards every append that hands out addresses of a pool on that
// pool's stream head (pending.pools): a claim committed meanwhile makes it conflict, catch
// up and skip the claimed address. Either way, one of the two wins, never both.

// Sentinel errors of fixed addresses.
var (
	// ErrAddressHeld: the fixed address is held by another attachment (or claimed by
	// one); the message names it (pod, container, node).
	ErrAddressHeld = errors.New("allocator: address held")
	// ErrAddressNotInPool: the fixed address is not in the pool the pod uses (the message
	// says which pool holds it, if any).
	ErrAddressNotInPool = errors.New("allocator: address not in the pod's pool")
	// ErrInvalidFixed: the fixed addresses do not make one attachment of the pool (two of
	// one family, families at different offsets, a family the pool does not have).
	ErrInvalidFixed = errors.New("allocator: invalid fixed addresses")
	// ErrAddressReserved: the fixed address is reserved in its pool.
	ErrAddressReserved = errors.New("allocator: address reserved")
)

// FixedFeature names the feature in level errors.
const FixedFeature = "fixed addresses (annotation coil.cybozu.com/ip, CNI \"ips\")"

// resolveFixed turns the addresses a pod asked for into the block, and the attachment's
// addresses in it (one per family of the block, the ones not asked for at the same
// offset). Caller holds n.mu.
func (n *Node) resolveFixed(pool *projection.Pool, fixed []netip.Addr) (uint64, []netip.Addr, error) {
	var block uint64
	var off uint64
	seen := map[bool]netip.Addr{}
	for i, a := range fixed {
		a = a.Unmap()
		if prev, dup := seen[a.Is4()]; dup {
			return 0, nil, errors.Wrapf(ErrInvalidFixed, "%s and %s are both %s: ask for one address per family", prev, a, familyName(a))
		}
		seen[a.Is4()] = a
		b, o, ok := pool.Locate(a)
		if !ok {
			return 0, nil, n.notInPool(pool, a)
		}
		if i > 0 && (b != block || o != off) {
			return 0, nil, errors.Wrapf(ErrInvalidFixed, "%s and %s are not at the same offset of one block of pool %q: a pod of a dual-stack pool gets the same offset in each family (ask for one of them, the other follows)",
				fixed[0], a, pool.Name)
		}
		block, off = b, o
	}
	addrs, ok := pool.Addrs(block, off)
	if !ok {
		return 0, nil, n.notInPool(pool, fixed[0])
	}
	for _, a := range fixed {
		if !slices.Contains(addrs, a.Unmap()) {
			return 0, nil, errors.Wrapf(ErrInvalidFixed, "%s is not in block %d of pool %q (%v)", a, block, pool.Name, addrs)
		}
	}
	return block, addrs, nil
}

func familyName(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// notInPool says where addr is instead: in another pool (named), or in none.
func (n *Node) notInPool(pool *projection.Pool, addr netip.Addr) error {
	for _, name := range slices.Sorted(maps.Keys(n.st.Cluster.Pools)) {
		other := n.st.Cluster.Pools[name]
		if name == pool.Name {
			continue
		}
		if _, _, ok := other.Locate(addr); ok {
			return errors.Wrapf(ErrAddressNotInPool, "address %s is in pool %q, but this pod uses pool %q (%s): choose the pool with the netconf \"pool\" key or the namespace's pool annotation",
				addr, name, pool.Name, subnetList(pool))
		}
	}
	return errors.Wrapf(ErrAddressNotInPool, "address %s is in no pool; this pod uses pool %q (%s)", addr, pool.Name, subnetList(pool))
}

func subnetList(p *projection.Pool) string {
	parts := make([]string, len(p.Subnets))
	for i, s := range p.Subnets {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}

// reserved refuses an address the pool never hands out: one a reservation covers (named
// with its reason, who reserved it and when), or an IPv4 subnet's network or broadcast
// address in a pool that skips those. addrs holds every family of the pool (resolveFixed
// adds the one not asked for, at the same offset), so a reservation in either family
// keeps the whole offset out of use, as for the addresses a node picks.
func (n *Node) reserved(pool *projection.Pool, addrs []netip.Addr) error {
	if !pool.HasExclusions() || len(addrs) == 0 {
		return nil
	}
	for _, a := range addrs {
		if r, ok := pool.ReservationOf(a); ok {
			why := ""
			if r.Reason != "" {
				why = ", reason " + safetext.Quote(r.Reason)
			}
			return errors.Wrapf(ErrAddressReserved, "address %s is reserved in pool %s (range %s%s, by %s since %s): "+
				"ask for another address, or `coilctl pool unreserve %s %s --reason TEXT`",
				a, pool.Name, r.Range(), why, safetext.Quote(r.Actor), r.Time.UTC().Format(time.RFC3339), pool.Name, a)
		}
		if pool.SkipNetworkBroadcast && pool.IsNetworkOrBroadcast(a) {
			return errors.Wrapf(ErrAddressReserved, "address %s is a network or broadcast address, which pool %s does not hand out "+
				"(coilctl pool set %s --skip-network-broadcast=false to change that)", a, pool.Name, pool.Name)
		}
	}
	return nil
}

// describeHolder is "pod NS/NAME (container ID/IF) on node N since T".
func describeHolder(pod, containerID, ifName, node string, since string) string {
	s := ""
	if pod != "" {
		s = "pod " + pod + " ("
	}
	s += "container " + shortContainer(containerID) + ", interface " + ifName
	if pod != "" {
		s += ")"
	}
	s += " on node " + node
	if since != "" {
		s += " since " + since
	}
	return s
}

func shortContainer(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func podOf(ns, name string) string {
	if name == "" {
		return ""
	}
	return ns + "/" + name
}

const timeFormat = "2006-01-02T15:04:05Z"

// heldError is ErrAddressHeld naming the holder, and what frees the address.
func heldError(addr netip.Addr, holder, reqPod string, samePod bool) error {
	if samePod {
		return errors.Wrapf(ErrAddressHeld, "address %s is still held by %s, an earlier pod of the same name %s: it is free once that pod's CNI DEL released it (or `coilctl address release %s`); try again",
			addr, holder, reqPod, addr)
	}
	return errors.Wrapf(ErrAddressHeld, "address %s is held by %s: it is free once that pod is deleted (its CNI DEL) or `coilctl address release %s`",
		addr, holder, addr)
}

// claimFixed decides and commits an allocation of fixed addresses alone (not batched),
// trying again after conflicts. Caller holds n.mu (it runs in the committer).
func (n *Node) claimFixed(ctx context.Context, o *op) {
	var bo backoff
	for {
		asg, retry, err := n.tryClaim(ctx, o)
		if !retry {
			o.done <- opResult{asg: asg, err: err}
			return
		}
		if werr := bo.wait(ctx); werr != nil {
			o.done <- opResult{err: errors.CombineErrors(errors.Wrap(werr, "claim a fixed address"), err)}
			return
		}
	}
}

// readNode reads another node's stream (from its newest snapshot).
func (n *Node) readNode(ctx context.Context, node string) (*projection.Node, error) {
	st := projection.NewNode()
	err := n.storeRetry(ctx, func(ctx context.Context) error {
		st = projection.NewNode()
		_, err := events.ReadFrom(ctx, n.cfg.Log, events.NodeStream(node), 0, st.Apply)
		return err
	})
	return st, errors.Wrapf(err, "read %s", events.NodeStream(node))
}

// tryClaim is one attempt of claimFixed; retry says the log moved under it.
func (n *Node) tryClaim(ctx context.Context, o *op) (*Assignment, bool, error) {
	key := o.req.key()
	me := n.me()
	if a, ok := me.Attached[key]; ok {
		return n.assignmentOf(key, a), false, nil // a repeated ADD keeps what it got
	}
	pool, err := n.lookupPool(ctx, o.req.Pool)
	if err != nil {
		return nil, false, err
	}
	// A disabled pool, or one whose node selector leaves this node out, hands out no
	// fixed address either; and no fallback: the address must lie in the chosen pool.
	if err = n.usable(pool); err != nil {
		return nil, false, err
	}
	if err = CheckLevel(n.st.Cluster, events.Level1, FixedFeature); err != nil {
		// The watch may not have brought a raise yet: read the cluster stream once
		// before refusing (a refusal path only, as lookupPool does for a new pool).
		if cerr := n.catchUp(ctx, events.ClusterStream); cerr != nil {
			return nil, false, errors.CombineErrors(err, cerr)
		}
		if err = CheckLevel(n.st.Cluster, events.Level1, FixedFeature); err != nil {
			return nil, false, err
		}
	}
	// Decide on the latest: the watch may not have brought a release yet (another
	// writer's in this node's stream, an operator's; a claim ended in the pool's), and a
	// refusal names a holder. Two reads, on fixed-address ADDs only.
	for _, s := range []events.Stream{n.stream(), events.PoolStream(pool.Name)} {
		if err = n.catchUp(ctx, s); err != nil {
			return nil, false, err
		}
	}
	me = n.me()
	if a, ok := me.Attached[key]; ok {
		return n.assignmentOf(key, a), false, nil
	}
	block, addrs, err := n.resolveFixed(pool, o.req.Fixed)
	if err != nil {
		return nil, false, err
	}
	if err = n.reserved(pool, addrs); err != nil {
		return nil, false, err
	}
	reqPod := podOf(o.req.PodNamespace, o.req.PodName)
	now := n.cfg.Clock.Now()
	poolStream := events.PoolStream(pool.Name)
	blocks := n.st.Pools[pool.Name]
	if blocks == nil {
		blocks = projection.NewBlocks()
	}
	var poolEvs []*events.Event
	var guards []events.Guard
	others := map[string]*projection.Node{} // other nodes' streams read, guarded
	readOther := func(node string) (*projection.Node, error) {
		if st, ok := others[node]; ok {
			return st, nil
		}
		st, rerr := n.readNode(ctx, node)
		if rerr != nil {
			return nil, rerr
		}
		others[node] = st
		guards = append(guards, events.Guard{Stream: events.NodeStream(node), Version: st.Head()})
		return st, nil
	}
	// 1. A standing claim: refused while its attachment holds the address; ended in the
	// same append when it no longer does (released by a path that did not end it).
	if c, ok := blocks.ClaimOf(addrs[0]); ok {
		var holder *projection.Node
		if c.Node == n.cfg.Node {
			holder = me
		} else if holder, err = readOther(c.Node); err != nil {
			return nil, false, err
		}
		ck := projection.AttachKey{ContainerID: c.ContainerID, IfName: c.IfName}
		if a, ok := holder.Attached[ck]; ok && slices.Contains(a.Addrs, addrs[0]) {
			return nil, false, heldError(addrs[0], describeHolder(c.Pod(), c.ContainerID, c.IfName, c.Node, c.Since.UTC().Format(timeFormat)),
				reqPod, reqPod != "" && c.Pod() == reqPod)
		}
		poolEvs = append(poolEvs, &events.Event{Time: now, Actor: n.cfg.Node, Payload: &events.AddressClaimReleased{
			Addrs: c.Addrs, Block: c.Block, Node: c.Node, ContainerID: c.ContainerID, IfName: c.IfName,
			Reason: fmt.Sprintf("the attachment no longer holds it (%s #%d); claimed again by node %s", events.NodeStream(c.Node), holder.Head().Seq, n.cfg.Node),
		}})
	}
	// 2. The block's owner must not hold it (an address it handed out itself).
	owner, owned, err := n.blockOwner(ctx, pool, block, &guards)
	if err != nil {
		return nil, false, err
	}
	if owned {
		var holder *projection.Node
		if owner == n.cfg.Node {
			holder = me
		} else if holder, err = readOther(owner); err != nil {
			return nil, false, err
		}
		if hk, ok := holder.Held[addrs[0]]; ok {
			a := holder.Attached[hk]
			pod := podOf(a.PodNamespace, a.PodName)
			return nil, false, heldError(addrs[0], describeHolder(pod, hk.ContainerID, hk.IfName, owner, a.Since.UTC().Format(timeFormat)),
				reqPod, reqPod != "" && pod == reqPod)
		}
	}
	if hk, ok := me.Held[addrs[0]]; ok { // a claim of this node outside its blocks
		a := me.Attached[hk]
		pod := podOf(a.PodNamespace, a.PodName)
		return nil, false, heldError(addrs[0], describeHolder(pod, hk.ContainerID, hk.IfName, n.cfg.Node, a.Since.UTC().Format(timeFormat)),
			reqPod, reqPod != "" && pod == reqPod)
	}
	// 3. Commit: the attachment in this node's stream, the claim in the pool's.
	ev := &events.Event{Time: now, Actor: n.cfg.Node, Payload: &events.AddressAssigned{
		ContainerID: o.req.ContainerID, IfName: o.req.IfName,
		PodNamespace: o.req.PodNamespace, PodName: o.req.PodName, PodUID: o.req.PodUID,
		Pool: pool.Name, Block: block, Addrs: addrs,
	}}
	poolEvs = append(poolEvs, &events.Event{Time: now, Actor: n.cfg.Node, Payload: &events.AddressClaimed{
		Addrs: addrs, Block: block, Node: n.cfg.Node, ContainerID: o.req.ContainerID, IfName: o.req.IfName,
		PodNamespace: o.req.PodNamespace, PodName: o.req.PodName, PodUID: o.req.PodUID,
	}})
	if _, _, err = n.fits(ev, newPending(0)); err != nil {
		return nil, false, err
	}
	guards = append(guards, events.Guard{Stream: events.ClusterStream, Version: n.st.Head(events.ClusterStream)})
	parts := []events.Part{{Stream: poolStream, Expected: n.st.Head(poolStream), Events: poolEvs}}
	stream := n.stream()
	_, err = n.appendLog(ctx, events.AppendRequest{
		Stream: stream, Expected: n.st.Head(stream), Events: []*events.Event{ev}, Parts: parts, Conditions: n.conditions(), Guards: guards,
	})
	if err != nil {
		if !errors.Is(err, events.ErrConflict) {
			return nil, false, errors.Wrapf(err, "claim %s", addrs[0])
		}
		var ce *events.ConflictError
		if errors.As(err, &ce) && n.follows(ce.Stream) {
			if _, cerr := n.absorb(ctx, ce.Stream, err); cerr != nil {
				return nil, false, errors.CombineErrors(err, cerr)
			}
		}
		return nil, true, err // another node's stream or a block stream: read again
	}
	if err := n.applyAppended([]*events.Event{ev}, parts); err != nil {
		return nil, false, err
	}
	n.log.Info("fixed address claimed", "addrs", addrs, "pool", pool.Name, "block", block, "blockOwner", owner, "pod", reqPod, "container", o.req.ContainerID)
	asg := n.assignmentOf(key, me.Attached[key])
	asg.Seq = ev.Seq
	return asg, false, nil
}

// blockOwner returns the owner of a block: in a split pool from its block stream, read
// now and guarded; else from the pool stream the node follows (guarded by the claim's
// own append to it). Caller holds n.mu.
func (n *Node) blockOwner(ctx context.Context, pool *projection.Pool, block uint64, guards *[]events.Guard) (string, bool, error) {
	if b := n.st.Pools[pool.Name]; b != nil {
		if o, ok := b.Owners[block]; ok {
			return o.Node, true, nil
		}
	}
	if !pool.Split {
		return "", false, nil
	}
	if _, ok := n.me().Blocks[projection.BlockRef{Pool: pool.Name, Index: block}]; ok {
		return n.cfg.Node, true, nil
	}
	bs := events.BlockStream(pool.Name, block)
	st := projection.NewState()
	if err := n.storeRetry(ctx, func(ctx context.Context) error {
		st = projection.NewState()
		return readStreams(ctx, n.cfg.Log, []events.Stream{bs}, 0, st)
	}); err != nil {
		return "", false, errors.Wrapf(err, "read %s", bs)
	}
	*guards = append(*guards, events.Guard{Stream: bs, Version: st.Head(bs)})
	if b := st.BlockStreams[projection.BlockRef{Pool: pool.Name, Index: block}]; b != nil {
		if o, ok := b.Owners[block]; ok {
			return o.Node, true, nil
		}
	}
	return "", false, nil
}

// claimOf returns the standing claim of an attachment of this node, if any (its
// addresses are a fixed address). Caller holds n.mu.
func (n *Node) claimOf(key projection.AttachKey, a *projection.Assignment) *projection.Claim {
	b := n.st.Pools[a.Pool]
	if b == nil || len(b.Claims) == 0 {
		return nil
	}
	c, ok := b.Claims[a.Addrs[0]]
	if !ok || c.Node != n.cfg.Node || c.ContainerID != key.ContainerID || c.IfName != key.IfName {
		return nil
	}
	return c
}

// releaseClaimed releases an attachment that holds a fixed address: AddressReleased in
// the node's stream and AddressClaimReleased in the pool's, in one append, alone (not
// batched), trying again after conflicts. Caller holds n.mu.
func (n *Node) releaseClaimed(ctx context.Context, o *op) {
	key := o.req.key()
	var bo backoff
	for {
		a, ok := n.me().Attached[key]
		if !ok {
			o.done <- opResult{}
			return
		}
		c := n.claimOf(key, a)
		now := n.cfg.Clock.Now()
		ev := &events.Event{Time: now, Actor: n.cfg.Node, Payload: &events.AddressReleased{
			ContainerID: key.ContainerID, IfName: key.IfName, Pool: a.Pool, Block: a.Block, Addrs: a.Addrs, Reason: o.reason,
		}}
		asg := n.assignmentOf(key, a)
		var parts []events.Part
		if c != nil {
			ps := events.PoolStream(a.Pool)
			parts = []events.Part{{Stream: ps, Expected: n.st.Head(ps), Events: []*events.Event{{Time: now, Actor: n.cfg.Node, Payload: &events.AddressClaimReleased{
				Addrs: c.Addrs, Block: c.Block, Node: n.cfg.Node, ContainerID: key.ContainerID, IfName: key.IfName, Reason: o.reason,
			}}}}}
		}
		stream := n.stream()
		_, err := n.appendLog(ctx, events.AppendRequest{Stream: stream, Expected: n.st.Head(stream), Events: []*events.Event{ev}, Parts: parts, Conditions: n.conditions()})
		if err == nil {
			if aerr := n.applyAppended([]*events.Event{ev}, parts); aerr != nil {
				o.done <- opResult{err: aerr}
				return
			}
			o.done <- opResult{asg: asg}
			return
		}
		if !errors.Is(err, events.ErrConflict) {
			o.done <- opResult{err: errors.Wrapf(err, "release %s", a.Addrs[0])}
			return
		}
		if _, cerr := n.absorb(ctx, stream, err); cerr != nil {
			o.done <- opResult{err: errors.CombineErrors(err, cerr)}
			return
		}
		if werr := bo.wait(ctx); werr != nil {
			o.done <- opResult{err: errors.CombineErrors(werr, err)}
			return
		}
	}
}

// hostPrefixes are the host routes (/32, /128) of addrs.
func hostPrefixes(addrs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		out[i] = netip.PrefixFrom(a, a.BitLen())
	}
	return out
}
