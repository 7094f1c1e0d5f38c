package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/kube"
	"github.com/coil-net/coil/netplumb"
)

// The daemon implements cniproto.Handler.
var _ cniproto.Handler = (*Daemon)(nil)

func (d *Daemon) notReady() error {
	if d.ready.Load() {
		return nil
	}
	return cniproto.NotReady("coild is replaying the log or re-acquiring its lease; try again")
}

// cniError maps allocator and log errors to CNI errors with the right codes.
func cniError(err error, pool string) error {
	var ce *cniproto.Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, allocator.ErrPoolNotFound):
		return cniproto.NewError(cniproto.CodeUnknownPool, "pool "+quote(pool)+" does not exist", "create it with `coilctl pool create` or set \"pool\" in the network config")
	case errors.Is(err, allocator.ErrExhausted):
		return cniproto.NewError(cniproto.CodePoolExhausted, "pool "+quote(pool)+" is exhausted", err.Error())
	case errors.Is(err, events.ErrFenced), errors.Is(err, events.ErrConflict), errors.Is(err, events.ErrUnavailable),
		errors.Is(err, events.ErrRewritten), errors.Is(err, allocator.ErrRetries), errors.Is(err, allocator.ErrNotRunning):
		return cniproto.NewError(cniproto.CodeTryAgainLater, "coild cannot commit now; try again", err.Error())
	case errors.Is(err, netplumb.ErrNetNSNotFound):
		return cniproto.NewError(cniproto.CodeInvalidEnv, "network namespace not found", err.Error())
	case errors.Is(err, netplumb.ErrNodeNetNS):
		return cniproto.NewError(cniproto.CodeInvalidEnv,
			"CNI_NETNS is the node's own network namespace, not a pod's: refused, nothing was changed", err.Error())
	case errors.Is(err, netplumb.ErrIfNameInUse):
		return cniproto.NewError(cniproto.CodeInvalidEnv, "interface name already in use in the pod", err.Error())
	}
	return cniproto.NewError(cniproto.CodeInternal, "coild: "+err.Error(), "")
}

func quote(s string) string { return "\"" + s + "\"" }

// fixedError maps the refusals of a fixed address (allocator, fixed.go) to CNI errors,
// saying where the address was asked for; nil for other errors. An address held by
// another attachment is code 11: it is free once its holder's DEL ran (a StatefulSet pod
// moved to another node), and the runtime retries. The others are the configuration's
// (code 7): retrying cannot help.
func fixedError(err error, from, pool string) error {
	switch {
	case errors.Is(err, allocator.ErrAddressHeld):
		return cniproto.NewError(cniproto.CodeTryAgainLater, "fixed address ("+from+") is in use", err.Error())
	case errors.Is(err, allocator.ErrAddressNotInPool), errors.Is(err, allocator.ErrInvalidFixed), errors.Is(err, allocator.ErrAddressReserved):
		return cniproto.NewError(cniproto.CodeInvalidNetworkConfig, "invalid fixed address ("+from+") for pool "+quote(pool), err.Error())
	case errors.Is(err, allocator.ErrLevel):
		return cniproto.NewError(cniproto.CodeInvalidNetworkConfig, "fixed addresses ("+from+") are not enabled in this cluster yet", err.Error())
	}
	return nil
}

// Add allocates (idempotently) and plumbs. The veth pair is prepared while the address
// commits; addresses and routes are put on it only once the address is committed. A
// failed allocation deletes the prepared pair; a failed plumbing releases the address
// again, explicitly, with the reason in the event.
func (d *Daemon) Add(ctx context.Context, req *cniproto.Request) (*cniproto.AddResult, error) {
	start := time.Now()
	res, err := d.add(ctx, req)
	d.metrics.observeCNI("ADD", start, err)
	return res, err
}

func (d *Daemon) add(ctx context.Context, req *cniproto.Request) (*cniproto.AddResult, error) {
	// The server validated the request already; coild's handler does not rely on it.
	if e := req.Validate("add"); e != nil {
		return nil, e
	}
	start := time.Now()
	session := d.sessions.Load()
	if err := d.notReady(); err != nil {
		// A session that ended (its lease lost, etcd revoked it) is followed by the next
		// within seconds: an ADD then waits for it rather than failing a pod start. Before
		// the first session (coild starting) it is refused at once.
		if session == 0 || !d.awaitReady(ctx, time.Now().Add(sessionRestartWait)) {
			return nil, err
		}
		session = d.sessions.Load()
	}
	// Before anything is allocated or created: the pod's namespace must exist and must
	// not be the node's own (plumbing a "pod" there replaces the node's default route).
	if err := d.plumber.CheckPodNetNS(req.NetNS); err != nil {
		if errors.Is(err, netplumb.ErrNetNSNotFound) {
			return nil, netnsNotFound(req.NetNS, err)
		}
		return nil, cniError(err, "")
	}
	mtu := d.podMTU(req)
	if mtu.mtu < cniproto.MinMTU6 {
		// Rare: an MTU too small for IPv6. Refuse it for a pod that would get IPv6 before
		// its pair is made or changed.
		if err := d.checkLowMTU(ctx, req, mtu); err != nil {
			return nil, err
		}
	}
	veth := netplumb.HostVethName(req.ContainerID, req.IfName)
	if err := d.beginAdd(ctx, veth); err != nil {
		return nil, err
	}
	defer func() {
		d.mu.Lock()
		if d.inflight[veth]--; d.inflight[veth] <= 0 {
			delete(d.inflight, veth)
		}
		d.recent[veth] = true
		d.mu.Unlock()
	}()
	// The veth pair does not depend on the address: it is made (or found) while the
	// address commits. Until Finish it carries no address or route, and the reconciler
	// leaves it alone while the ADD is in flight (inflight, above).
	prep := make(chan prepared, 1)
	go func() {
		pd, err := d.plumber.Prepare(ctx, netplumb.Pod{ContainerID: req.ContainerID, IfName: req.IfName, NetNS: req.NetNS, MTU: mtu.mtu})
		prep <- prepared{pd, err}
	}()
	abort := func() {
		if r := <-prep; r.pd != nil {
			if err := r.pd.Abort(); err != nil {
				d.log.Error("delete the prepared veth of a failed ADD", "container", req.ContainerID, "err", err)
			}
		}
	}
	// A repeated ADD is not a new allocation: it keeps its pool.
	prev, existed := d.node.Lookup(req.ContainerID, req.IfName)
	var sel kube.Selection
	if existed {
		sel = kube.Selection{Pool: prev.Pool, Source: "existing attachment", PodUID: prev.PodUID}
	} else {
		var err error
		if sel, err = d.selectPool(ctx, req); err != nil {
			abort()
			return nil, err
		}
	}
	pool := sel.Pool
	areq := allocator.Request{
		ContainerID: req.ContainerID, IfName: req.IfName, Pool: pool, Fallbacks: sel.Fallbacks,
		PodNamespace: req.PodNamespace, PodName: req.PodName, PodUID: sel.PodUID,
	}
	// Fixed addresses: the runtime's "ips" wins over the pod's annotation (docs/cni.md,
	// "Fixed addresses"). A repeated ADD keeps what the attachment holds.
	fixedFrom := ""
	switch {
	case existed:
	case len(req.IPs) > 0:
		areq.Fixed, fixedFrom = req.IPs, `runtimeConfig "ips"`
	case len(sel.FixedIPs) > 0:
		areq.Fixed, fixedFrom = sel.FixedIPs, "pod annotation "+kube.IPAnnotation
	}
	asg, err := d.node.Allocate(ctx, areq)
	// The wait is counted from the fence, not from the ADD's start: the first try may
	// have spent seconds on a paused member, and the next session's start can meet it
	// again (each call placed there costs a try). The plugin's own timeout bounds the whole.
	if errors.Is(err, events.ErrFenced) && d.awaitNewSession(ctx, session, time.Now().Add(allocator.DefaultAppendTimeout)) {
		// Nothing was committed (the append was refused); the new session holds a new
		// lease and has read the log again.
		d.log.Info("ADD fenced by a lost lease; allocated again in the new session", "container", req.ContainerID, "after", time.Since(start).Round(time.Millisecond))
		asg, err = d.node.Allocate(ctx, areq)
	}
	if err != nil {
		abort()
		if fixedFrom != "" {
			if e := fixedError(err, fixedFrom, pool); e != nil {
				return nil, e
			}
		}
		if errors.Is(err, allocator.ErrPoolNotFound) {
			return nil, cniproto.NewError(cniproto.CodeUnknownPool, "pool "+quote(pool)+" ("+string(sel.Source)+") does not exist",
				"create it with `coilctl pool create` or fix the "+string(sel.Source))
		}
		var re *allocator.RefusalError
		if errors.As(err, &re) {
			code := cniproto.CodePoolDisabled
			if errors.Is(err, allocator.ErrNodeNotSelected) {
				code = cniproto.CodeNodeNotSelected
			}
			// re.Msg names the pool (and the node); say where the choice came from.
			why := " (chosen by the " + string(sel.Source) + ")"
			if re.Pool != pool {
				why = " (configured after pool " + quote(pool) + ", chosen by the " + string(sel.Source) + ", which is disabled)"
			}
			return nil, cniproto.NewError(code, re.Msg+why, re.Details())
		}
		return nil, cniError(err, pool)
	}
	pool = asg.Pool // a fallback's, when the chosen pool is disabled
	if !existed {
		d.metrics.allocations.WithLabelValues(pool).Inc()
	}
	d.ensureExported(ctx, asg)
	crashPoint(d.cfg.CrashAt, "add-after-alloc")
	r := <-prep
	crashPoint(d.cfg.CrashAt, "add-after-prepare")
	var att netplumb.Attachment
	if err = r.err; err == nil {
		att, err = r.pd.Finish(ctx, asg.Addrs)
	}
	if err != nil {
		// Roll back explicitly: the address goes back, recorded with why.
		if _, rerr := d.node.Release(context.WithoutCancel(ctx), req.ContainerID, req.IfName, "ADD failed: "+err.Error()); rerr != nil {
			d.log.Error("release after failed ADD", "container", req.ContainerID, "err", rerr)
		} else {
			d.metrics.releases.WithLabelValues("add_failed").Inc()
		}
		if errors.Is(err, netplumb.ErrNetNSNotFound) {
			return nil, netnsNotFound(req.NetNS, err)
		}
		return nil, cniError(err, pool)
	}
	crashPoint(d.cfg.CrashAt, "add-after-setup")
	return &cniproto.AddResult{
		HostVeth: att.HostVeth, HostMAC: att.HostMAC.String(), PodIfName: req.IfName, PodMAC: att.PodMAC.String(),
		Addrs: att.Addrs, Gateway4: att.Gateway4, Gateway6: att.Gateway6, MTU: att.MTU,
	}, nil
}

// checkLowMTU refuses an MTU below IPv6's minimum when the pod would get IPv6: its
// existing attachment has an IPv6 address, or the pool chosen for it has IPv6.
func (d *Daemon) checkLowMTU(ctx context.Context, req *cniproto.Request, mtu mtuChoice) error {
	ipv6, pool := false, ""
	if prev, ok := d.node.Lookup(req.ContainerID, req.IfName); ok {
		pool = prev.Pool
		for _, a := range prev.Addrs {
			ipv6 = ipv6 || (a.Is6() && !a.Is4In6())
		}
	} else {
		sel, err := d.selectPool(ctx, req)
		if err != nil {
			return err
		}
		pool = sel.Pool
		ipv6, _ = d.node.PoolHasIPv6(pool) // an unknown pool is refused by the allocation
	}
	return checkMTU(mtu, ipv6, pool)
}

// sessionRestartWait bounds how long an ADD that arrives between two sessions waits for
// the next one (see add).
const sessionRestartWait = 5 * time.Second

// awaitReady waits until coild is ready (a session serving) or deadline passes, and
// tells which.
func (d *Daemon) awaitReady(ctx context.Context, deadline time.Time) bool {
	return d.await(ctx, deadline, d.ready.Load)
}

// awaitNewSession waits until a session newer than session is ready, or deadline, and
// says whether one is. An append is fenced when etcd no longer has coild's lease, and
// etcd can revoke it under coild: in the chaos soak it did, 1.5 s after an etcd leader
// paused (SIGSTOP) for 11 s resumed, most likely that leader revoking the lease it saw
// expired before it learnt it had been deposed (etcd's leadership check before revoking
// is skipped when a raft tick was recent, and after a pause the tick comes first). The
// session ends at the next renewal, asked for at once here, and the next one starts
// about a second later: the ADD is allocated again there instead of failing.
func (d *Daemon) awaitNewSession(ctx context.Context, session uint64, deadline time.Time) bool {
	wake(d.leaseCheck)
	return d.await(ctx, deadline, func() bool { return d.ready.Load() && d.sessions.Load() > session })
}

// await polls cond until it holds (true), deadline (or ctx's, if earlier) passes or ctx
// ends (false).
func (d *Daemon) await(ctx context.Context, deadline time.Time, cond func() bool) bool {
	if cd, ok := ctx.Deadline(); ok && cd.Before(deadline) {
		deadline = cd
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if !time.Now().Before(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// prepared is the outcome of Plumber.Prepare run beside the allocation.
type prepared struct {
	pd  Pending
	err error
}

// observed runs a CNI command (CHECK, DEL, GC) and records its duration and result in
// the metrics. (Add records its own: it returns a result as well.)
func (d *Daemon) observed(cmd string, run func() error) error {
	start := time.Now()
	err := run()
	d.metrics.observeCNI(cmd, start, err)
	return err
}

// Check verifies the attachment against the log and the kernel.
func (d *Daemon) Check(ctx context.Context, req *cniproto.Request) error {
	return d.observed("CHECK", func() error { return d.check(ctx, req) })
}

func (d *Daemon) check(ctx context.Context, req *cniproto.Request) error {
	if e := req.Validate("check"); e != nil {
		return e
	}
	if err := d.notReady(); err != nil {
		return err
	}
	asg, ok := d.node.Lookup(req.ContainerID, req.IfName)
	if !ok {
		return cniproto.UnknownContainer(req.ContainerID, req.IfName)
	}
	if len(req.PrevAddrs) > 0 {
		want := map[string]bool{}
		for _, a := range asg.Addrs {
			want[a.String()] = true
		}
		for _, a := range req.PrevAddrs {
			if !want[a.String()] {
				return cniproto.NewError(cniproto.CodeInternal, "prevResult address "+a.String()+" is not the one coild assigned", "coild holds "+addrList(asg.Addrs))
			}
		}
	}
	mtu := d.podMTU(req)
	if err := d.plumber.Check(ctx, netplumb.Pod{ContainerID: req.ContainerID, IfName: req.IfName, NetNS: req.NetNS, Addrs: asg.Addrs, MTU: mtu.mtu}); err != nil {
		if errors.Is(err, netplumb.ErrNetNSNotFound) || errors.Is(err, netplumb.ErrNodeNetNS) {
			return cniError(err, "")
		}
		details := err.Error()
		if errors.Is(err, netplumb.ErrMTUMismatch) {
			details += " (MTU " + strconv.Itoa(mtu.mtu) + " from " + mtu.source + ")"
		}
		return cniproto.NewError(cniproto.CodeInternal, "pod network is not as coild set it up", details)
	}
	return nil
}

func addrList(as []netip.Addr) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += ","
		}
		s += a.String()
	}
	return s
}

// Del records the intent, answers, and deletes the veth and releases the address in the
// background, in batches: the address is released only once its link is gone. A DEL of
// an unknown attachment is success.
func (d *Daemon) Del(ctx context.Context, req *cniproto.Request) error {
	return d.observed("DEL", func() error { return d.del(ctx, req) })
}

// DEL never looks at CNI_NETNS (a DEL after a refused ADD carries the same, refused
// path, and must succeed): it deletes only the host veth named after the attachment, and
// only when it is a veth in Coil's link groups (netplumb.TeardownMany).
func (d *Daemon) del(ctx context.Context, req *cniproto.Request) error {
	if e := req.Validate("del"); e != nil {
		return e
	}
	return d.enqueueDel(ctx, req.ContainerID, req.IfName, "CNI DEL", false)
}

// GC releases every attachment of this node not in the valid list. With no list (an old
// runtime, or cnitool gc) it does nothing.
func (d *Daemon) GC(ctx context.Context, req *cniproto.GCRequest) error {
	return d.observed("GC", func() error { return d.gc(ctx, req) })
}

func (d *Daemon) gc(ctx context.Context, req *cniproto.GCRequest) error {
	// Every entry must be a whole, valid attachment, or nothing is released: a broken
	// entry read as a key matches no attachment and would widen what GC deletes.
	if e := req.Validate(); e != nil {
		return e
	}
	if err := d.notReady(); err != nil {
		return err
	}
	if req.ValidAttachments == nil {
		return nil
	}
	valid := map[[2]string]bool{}
	for _, a := range req.ValidAttachments {
		valid[[2]string{a.ContainerID, a.IfName}] = true
	}
	var waits []chan struct{}
	for _, a := range d.node.Attachments() {
		if valid[[2]string{a.ContainerID, a.IfName}] {
			continue
		}
		// An attachment whose ADD is running now is left alone: the runtime's list may
		// predate that ADD.
		if err := d.enqueueDel(ctx, a.ContainerID, a.IfName, "CNI GC: not in the runtime's valid attachments", true); err != nil {
			return err
		}
		d.mu.Lock()
		if ch := d.deleting[netplumb.HostVethName(a.ContainerID, a.IfName)]; ch != nil {
			waits = append(waits, ch)
		}
		d.mu.Unlock()
	}
	for _, ch := range waits {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Status is nil when coild can serve ADD.
func (d *Daemon) Status(ctx context.Context) error {
	return d.notReady()
}

// ---- DEL in the background ----

type delItem struct {
	containerID, ifName, veth, reason string
	// gc is the leak collector's kind of release ("pod_deleted", "pod_replaced"), or "".
	gc string
}

func (d *Daemon) intentPath(veth string) string { return filepath.Join(d.cfg.StateDir, "del", veth) }

// enqueueDel records a DEL intent and queues the DEL. A DEL already running for the
// attachment covers this one; with skipAdding, an attachment with an ADD in progress is
// skipped (for GC).
func (d *Daemon) enqueueDel(ctx context.Context, containerID, ifName, reason string, skipAdding bool) error {
	return d.enqueue(ctx, delItem{containerID: containerID, ifName: ifName, reason: reason}, skipAdding)
}

// enqueueDelGC queues the release of a leaked attachment (kind: the leak collector's
// kind, counted in coil_gc_releases_total). An attachment with an ADD in progress is skipped.
func (d *Daemon) enqueueDelGC(ctx context.Context, containerID, ifName, reason, kind string) error {
	return d.enqueue(ctx, delItem{containerID: containerID, ifName: ifName, reason: reason, gc: kind}, true)
}

func (d *Daemon) enqueue(ctx context.Context, it delItem, skipAdding bool) error {
	containerID, ifName, reason := it.containerID, it.ifName, it.reason
	veth := netplumb.HostVethName(containerID, ifName)
	d.mu.Lock()
	if _, busy := d.deleting[veth]; busy || (skipAdding && d.inflight[veth] > 0) {
		d.mu.Unlock()
		return nil
	}
	d.deleting[veth] = make(chan struct{})
	d.mu.Unlock()
	// The intent survives a crash of coild: the reconciler finishes it.
	if err := os.WriteFile(d.intentPath(veth), []byte(containerID+"\n"+ifName+"\n"+reason+"\n"), 0o600); err != nil {
		d.finishDel(veth)
		return cniproto.NewError(cniproto.CodeIOFailure, "record DEL intent", err.Error())
	}
	crashPoint(d.cfg.CrashAt, "del-after-intent")
	select {
	case d.delq <- delItem{containerID: containerID, ifName: ifName, veth: veth, reason: reason, gc: it.gc}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Daemon) finishDel(veth string) {
	d.mu.Lock()
	if ch := d.deleting[veth]; ch != nil {
		close(ch)
		delete(d.deleting, veth)
	}
	d.recent[veth] = true
	d.mu.Unlock()
}

// beginAdd waits while a DEL (or a reconciler action) of the same attachment is running,
// then marks the ADD in progress, atomically with the check so that nothing can start
// deleting the attachment in between.
func (d *Daemon) beginAdd(ctx context.Context, veth string) error {
	for logged := false; ; logged = true {
		d.mu.Lock()
		ch := d.deleting[veth]
		if ch == nil {
			d.inflight[veth]++
			d.mu.Unlock()
			return nil
		}
		d.mu.Unlock()
		if !logged {
			d.log.Info("ADD waits for the DEL of its attachment", "veth", veth)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return cniproto.NewError(cniproto.CodeTryAgainLater, "a DEL of this attachment is still running; try again", ctx.Err().Error())
		}
	}
}

// delWorker deletes queued veths in batches (one kernel call for the batch), then
// releases their addresses.
func (d *Daemon) delWorker(ctx context.Context) {
	for {
		var batch []delItem
		select {
		case <-ctx.Done():
			return
		case it := <-d.delq:
			batch = append(batch, it)
		}
	collect:
		for len(batch) < 256 {
			select {
			case it := <-d.delq:
				batch = append(batch, it)
			default:
				break collect
			}
		}
		d.runDels(ctx, batch)
	}
}

func (d *Daemon) runDels(ctx context.Context, batch []delItem) {
	names := make([]string, len(batch))
	for i, it := range batch {
		names[i] = it.veth
	}
	if err := d.plumber.TeardownMany(ctx, names); err != nil {
		d.log.Error("delete veths", "count", len(names), "err", err)
		for _, it := range batch {
			d.finishDel(it.veth) // intents stay; the reconciler retries
		}
		return
	}
	crashPoint(d.cfg.CrashAt, "del-after-teardown")
	if !d.loaded.Load() {
		// Not read the log yet (starting, or a new session): the intents stay, and the
		// session's first reconcile releases the addresses.
		for _, it := range batch {
			d.finishDel(it.veth)
		}
		return
	}
	// Released concurrently, so the node's committer groups them into few appends.
	var wg sync.WaitGroup
	for _, it := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if asg, err := d.node.Release(ctx, it.containerID, it.ifName, it.reason); err != nil {
				d.log.Error("release after DEL", "container", it.containerID, "err", err)
			} else {
				if asg != nil {
					d.metrics.releases.WithLabelValues(reasonLabel(it)).Inc()
					if it.gc != "" {
						d.metrics.gcReleases.WithLabelValues(it.gc).Inc()
					}
				}
				_ = os.Remove(d.intentPath(it.veth))
			}
			d.finishDel(it.veth)
		}()
	}
	wg.Wait()
}

func reasonLabel(it delItem) string {
	reason := it.reason
	switch {
	case it.gc != "":
		return "leak_gc"
	case len(reason) >= 6 && reason[:6] == "CNI GC":
		return "cni_gc"
	case reason == "CNI DEL":
		return "cni_del"
	}
	return "other"
}
