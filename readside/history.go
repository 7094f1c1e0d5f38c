package readside

import (
	"cmp"
	"context"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
	"github.com/coil-net/coil/logio"
	"github.com/coil-net/coil/projection"
)

// ErrInvalidQuery: a history query that does not name exactly one address, container
// or pod.
var ErrInvalidQuery = errors.New("readside: invalid query")

// Holding is one attachment's tenure of its addresses: from its AddressAssigned to the
// AddressReleased of the same container and interface on the same node (if any yet).
// In the history of an address it may also be a reservation of it (Kind
// KindReservation): from the AddressesReserved that covered it to the
// AddressesUnreserved (or PoolDeleted) that ended that. Its JSON form is coilctl
// history's -o json.
type Holding struct {
	// Kind is KindAttachment or KindReservation.
	Kind         string       `json:"kind"`
	Addrs        []netip.Addr `json:"addrs"`
	Pool         string       `json:"pool"`
	Block        uint64       `json:"block"`
	Node         string       `json:"node"`
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
	From         time.Time    `json:"from"`
	FromRevision int64        `json:"fromRevision"`
	// To is when the addresses were released; nil while they are still held.
	To            *time.Time `json:"to"`
	ToRevision    int64      `json:"toRevision,omitempty"`
	ReleaseReason string     `json:"releaseReason,omitempty"`
	// ReleasedBy is the actor of the release (the node, or coilctl:USER for a reclaim;
	// for a reservation, of the unreserve or the pool's deletion).
	ReleasedBy string `json:"releasedBy,omitempty"`
	// Fixed: the attachment claimed its addresses (a fixed address: AddressClaimed in
	// the pool's stream); set in the history of an address only.
	Fixed bool `json:"fixed,omitempty"`
	// Reason and Actor are a reservation's (its AddressesReserved event's); AfterRelease
	// that it was made with --after-release (it took effect as the holder released).
	Reason       string `json:"reason,omitempty"`
	Actor        string `json:"actor,omitempty"`
	AfterRelease bool   `json:"afterRelease,omitempty"`

	seq uint64 // sequence of the assignment in its node stream (ordering ties)
}

// The kinds of holding.
const (
	KindAttachment  = "attachment"
	KindReservation = "reservation"
)

// HeldAt reports whether the holding covered time t (from inclusive, to exclusive).
func (h *Holding) HeldAt(t time.Time) bool {
	return !h.From.After(t) && (h.To == nil || h.To.After(t))
}

// Query selects the assignments History reports: by address, by container ID prefix
// (lower-case hex) or by pod. Exactly one must be set.
type Query struct {
	Addr                  netip.Addr
	Container             string
	PodNamespace, PodName string
}

func (q *Query) validate() error {
	n := 0
	if q.Addr.IsValid() {
		n++
	}
	if q.Container != "" {
		n++
	}
	if q.PodNamespace != "" || q.PodName != "" {
		n++
		if q.PodNamespace == "" || q.PodName == "" {
			return errors.Wrapf(ErrInvalidQuery, "pod %q/%q: give both namespace and name", q.PodNamespace, q.PodName)
		}
	}
	if n != 1 {
		return errors.Wrapf(ErrInvalidQuery, "%d of address, container and pod given, want exactly one", n)
	}
	return nil
}

func (q *Query) match(p *events.AddressAssigned) bool {
	switch {
	case q.Addr.IsValid():
		for _, a := range p.Addrs {
			if a == q.Addr {
				return true
			}
		}
		return false
	case q.Container != "":
		return strings.HasPrefix(p.ContainerID, q.Container)
	}
	return p.PodName == q.PodName && p.PodNamespace == q.PodNamespace
}

// String names the query: "address 10.1.2.3", "container 4f2a91", "pod default/web-0".
func (q *Query) String() string {
	switch {
	case q.Addr.IsValid():
		return "address " + q.Addr.String()
	case q.Container != "":
		return "container " + q.Container
	}
	return "pod " + q.PodNamespace + "/" + q.PodName
}

// indexKey is the attachment-index key of the query (logindex.PodKey or
// logindex.ContainerKey), and false when the index cannot narrow it: an address, or a
// container ID prefix shorter than 12 characters.
func (q *Query) indexKey() (string, bool) {
	switch {
	case q.Addr.IsValid():
		return "", false
	case q.Container != "":
		return logindex.ContainerQueryKey(q.Container)
	}
	return logindex.PodKey(q.PodNamespace, q.PodName), true
}

// History reads the node streams at one revision (Workers streams at once) and pairs
// each AddressAssigned that q matches with the next AddressReleased of the same container
// and interface in that node's stream. With archive files (logio.ReadArchives: any
// order, verified as one chain per stream), their events are read first, in one
// streaming pass, and each stream's live events continue them (the join checked), so a
// holding may span the archive's end. For an address, only the streams of the nodes that
// ever owned its block or claimed it (a fixed address) are read live (fed the archived
// cluster and pool events too); its reservations are holdings too (KindReservation) and
// the claims' holdings are marked Fixed (unless the cluster or pool streams cannot tell:
// then every node stream is read, without either). For
// a pod or a container ID prefix of 12 characters or more, with ix set, the attachment
// index narrows each stream's live read to the chunks that may mention it (Index); the
// result is the same as a full read. It returns the holdings ordered by assignment time
// (then revision, node, sequence) and the revision read at. A stream whose early events
// were archived and are in no archive given fails (events.ErrCompacted or
// logio.ErrArchiveGap) saying to pass them with --archive.
func History(ctx context.Context, log events.Log, q *Query, ix *Index, archives []string) ([]*Holding, int64, error) {
	if err := q.validate(); err != nil {
		return nil, 0, err
	}
	heads, rev, err := log.Streams(ctx, "node/", 0)
	if err != nil {
		return nil, 0, errors.Wrap(err, "list node streams")
	}
	var owners *ownerFold
	if q.Addr.IsValid() {
		owners = newOwnerFold(q.Addr)
	}
	per := map[events.Stream]*pairing{}
	pairingOf := func(s events.Stream) *pairing {
		p := per[s]
		if p == nil {
			p = newPairing(q, s)
			per[s] = p
		}
		return p
	}
	arch, err := logio.ReadArchives(ctx, archives, func(e *events.Event) error {
		kind, name := e.Stream.Kind()
		switch {
		case kind == "node":
			return pairingOf(e.Stream).visit(e)
		case owners == nil:
			return nil
		case kind == "cluster":
			return owners.cluster(e)
		case kind == "pool":
			owners.pool(name, e)
		case kind == "block":
			if pool, _, ok := e.Stream.Block(); ok {
				owners.pool(pool, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	keep := func(events.Stream) bool { return true }
	told := false // the cluster and pool streams told addr's owners, claims and reservations
	if owners != nil {
		nodes, ok, berr := blockOwners(ctx, log, rev, owners, arch)
		if berr != nil {
			return nil, 0, berr
		}
		if told = ok; ok {
			keep = func(s events.Stream) bool { _, n := s.Kind(); return nodes[n] }
		}
	}
	for s := range arch.Streams() {
		if kind, _ := s.Kind(); kind == "node" && keep(s) {
			if _, ok := heads[s]; !ok {
				return nil, 0, arch.JoinHead(s, events.Version{})
			}
		}
	}
	streams := StreamsOf(heads, keep)
	for _, s := range streams {
		pairingOf(s)
	}
	var entries map[events.Stream][]*logindex.Entry
	key, indexed := q.indexKey()
	if indexed && ix != nil && len(streams) > 0 {
		if entries, err = ix.load(ctx, rev); err != nil {
			return nil, 0, err
		}
	}
	err = Parallel(ctx, 0, len(streams), func(ctx context.Context, i int) error {
		s, p := streams[i], per[streams[i]]
		return ix.read(ctx, log, s, heads[s], rev, entries[s], arch, chunkRead{
			want:  p.wants(key),
			visit: p.visit,
			full:  func(ctx context.Context) error { return readLive(ctx, log, s, heads[s], rev, arch, p.visit) },
		})
	})
	if err != nil {
		return nil, 0, err
	}
	var out []*Holding
	for _, s := range streams {
		out = append(out, per[s].out...)
	}
	if told {
		for _, h := range out {
			h.Fixed = owners.claims[[3]string{h.Node, h.ContainerID, h.IfName}]
		}
		out = append(out, owners.reserves...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		switch {
		case !a.From.Equal(b.From):
			return a.From.Before(b.From)
		case a.FromRevision != b.FromRevision:
			return a.FromRevision < b.FromRevision
		case a.Node != b.Node:
			return a.Node < b.Node
		}
		return a.seq < b.seq
	})
	return out, rev, nil
}

// readLive feeds fn the events of stream s (head at rev) that the archives do not hold:
// from #1 when they hold none of s, else from the one after their last, whose join to
// them is checked (logio.Archives.Join). The live log's ErrCompacted (events archived
// and in no archive given) says to pass them with --archive.
func readLive(ctx context.Context, log events.Log, s events.Stream, head events.Version, rev int64, arch *logio.Archives,
	fn func(*events.Event) error) error {
	last := arch.Last(s)
	if last.Seq > 0 {
		if err := arch.CheckFrom(s); err != nil {
			return err
		}
		if head.Seq <= last.Seq {
			return arch.JoinHead(s, head)
		}
	}
	first := true
	_, err := log.Read(ctx, s, last.Seq+1, rev, func(e *events.Event) error {
		if first && last.Seq > 0 {
			if err := arch.Join(e); err != nil {
				return err
			}
		}
		first = false
		return fn(e)
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, events.ErrCompacted) && last.Seq > 0:
		return arch.Gap(s, err)
	case errors.Is(err, logio.ErrBroken):
		return err
	}
	return archivedHint(errors.Wrapf(err, "read %s at revision %d", s, rev))
}

// joinLive checks, for the indexed read of stream s (head at rev), that the live log
// continues the archives (reading the one event after their last), and returns where the
// live read starts (1 when the archives hold none of s) and 0 when nothing is left to
// read.
func joinLive(ctx context.Context, log events.Log, s events.Stream, head events.Version, rev int64, arch *logio.Archives) (uint64, error) {
	last := arch.Last(s)
	if last.Seq == 0 {
		return 1, nil
	}
	if err := arch.CheckFrom(s); err != nil {
		return 0, err
	}
	if head.Seq <= last.Seq {
		return 0, arch.JoinHead(s, head)
	}
	var next *events.Event
	_, err := log.Read(ctx, s, last.Seq+1, rev, func(e *events.Event) error { next = e; return errStopStream })
	switch {
	case errors.Is(err, events.ErrCompacted):
		return 0, arch.Gap(s, err)
	case err != nil && !errors.Is(err, errStopStream):
		return 0, errors.Wrapf(err, "read %s #%d at revision %d", s, last.Seq+1, rev)
	}
	if err := arch.Join(next); err != nil {
		return 0, err
	}
	return last.Seq + 1, nil
}

// archivedHint adds to an error matching events.ErrCompacted (the events read were
// archived) what to do about it; other errors are returned as they are.
func archivedHint(err error) error {
	if !errors.Is(err, events.ErrCompacted) {
		return err
	}
	return errors.Mark(errors.Newf("%s; pass the archive file with --archive FILE (the file 'coilctl log archive' wrote)", err.Error()), events.ErrCompacted)
}

// pairing pairs one node stream's matching assignments with their releases, fed the
// stream's events in sequence order (all of them, or every chunk that may mention the
// query or a holding still open).
type pairing struct {
	q    *Query
	node string
	open map[[2]string]*Holding // container ID and interface -> holding not released yet
	out  []*Holding
}

// newPairing is the empty pairing of node stream s for q.
func newPairing(q *Query, s events.Stream) *pairing {
	_, node := s.Kind()
	return &pairing{q: q, node: node, open: map[[2]string]*Holding{}}
}

// wants is the chunk test of an indexed read for p (Index.read): a chunk must be read if
// it may mention key (the query's index key) or the container of a holding still open
// (its release).
func (p *pairing) wants(key string) func(*logindex.Entry) bool {
	return func(e *logindex.Entry) bool { return e.MayContain(key) || mayContainOpen(e, p.open) }
}

func (p *pairing) visit(e *events.Event) error {
	switch pl := e.Payload.(type) {
	case *events.AddressAssigned:
		if !p.q.match(pl) {
			return nil
		}
		h := &Holding{
			Addrs: pl.Addrs, Pool: pl.Pool, Block: pl.Block, Node: p.node,
			Kind: KindAttachment, ContainerID: pl.ContainerID, IfName: pl.IfName,
			PodNamespace: pl.PodNamespace, PodName: pl.PodName, PodUID: pl.PodUID,
			From: e.Time, FromRevision: e.Revision, seq: e.Seq,
		}
		p.open[[2]string{pl.ContainerID, pl.IfName}] = h
		p.out = append(p.out, h)
	case *events.AddressReleased:
		if len(p.open) == 0 {
			return nil
		}
		k := [2]string{pl.ContainerID, pl.IfName}
		if h := p.open[k]; h != nil {
			t := e.Time
			h.To, h.ToRevision, h.ReleaseReason, h.ReleasedBy = &t, e.Revision, pl.Reason, e.Actor
			delete(p.open, k)
		}
	}
	return nil
}

// mayContainOpen reports whether e may mention the container of a holding still open.
func mayContainOpen(e *logindex.Entry, open map[[2]string]*Holding) bool {
	for k := range open {
		if e.MayContain(logindex.ContainerKey(k[0])) {
			return true
		}
	}
	return false
}

// ownerFold gathers what blockOwners needs, fed the cluster stream's events (folded: which
// blocks of which pools ever held addr, and when addr was reserved) and the pool streams'
// BlockAssigned and AddressClaimed events (which nodes were assigned which blocks, which
// attachments claimed addr; all of them, as a pool's events may come before the cluster
// events that tell whether they matter).
type ownerFold struct {
	addr     netip.Addr
	fold     *projection.Cluster
	refs     map[projection.BlockRef]bool
	pools    map[string]bool
	assigned map[projection.BlockRef]map[string]bool // block -> nodes ever assigned it
	claims   map[[3]string]bool                      // node, container ID, interface that claimed addr
	reserved map[string]*Holding                     // pool -> its reservation of addr, while it stands
	reserves []*Holding                              // every reservation of addr, in log order
}

func newOwnerFold(addr netip.Addr) *ownerFold {
	return &ownerFold{addr: addr, fold: projection.NewCluster(), refs: map[projection.BlockRef]bool{}, pools: map[string]bool{},
		assigned: map[projection.BlockRef]map[string]bool{}, claims: map[[3]string]bool{}, reserved: map[string]*Holding{}}
}

// cluster folds one cluster event, in sequence order.
func (o *ownerFold) cluster(e *events.Event) error {
	if err := o.fold.Apply(e); err != nil {
		return errors.Wrapf(err, "fold cluster #%d", e.Seq)
	}
	switch p := e.Payload.(type) {
	case *events.PoolCreated:
		o.located(p.Name)
	case *events.PoolSubnetAdded:
		o.located(p.Name)
	case *events.AddressesReserved:
		o.reservation(p.Pool, e, "")
	case *events.AddressesUnreserved:
		o.reservation(p.Pool, e, p.Reason)
	case *events.PoolDeleted:
		o.reservation(p.Name, e, "pool deleted")
	}
	return nil
}

// located notes the block of pool name that holds addr, if any.
func (o *ownerFold) located(name string) {
	if p := o.fold.Pools[name]; p != nil {
		if idx, _, ok := p.Locate(o.addr); ok {
			o.refs[projection.BlockRef{Pool: name, Index: idx}] = true
			o.pools[name] = true
		}
	}
}

// reservation opens or ends pool's reservation of addr after e changed its reservations
// (ending it with reason).
func (o *ownerFold) reservation(pool string, e *events.Event, reason string) {
	var res projection.Reservation
	var now bool
	p := o.fold.Pools[pool]
	if p != nil {
		res, now = p.ReservationOf(o.addr)
	}
	open := o.reserved[pool]
	switch {
	case now && open == nil:
		idx, _, _ := p.Locate(o.addr)
		h := &Holding{Kind: KindReservation, Addrs: []netip.Addr{o.addr}, Pool: pool, Block: idx,
			From: e.Time, FromRevision: e.Revision, Reason: res.Reason, Actor: res.Actor, AfterRelease: res.AfterRelease}
		o.reserved[pool] = h
		o.reserves = append(o.reserves, h)
	case !now && open != nil:
		t := e.Time
		open.To, open.ToRevision, open.ReleaseReason, open.ReleasedBy = &t, e.Revision, reason, e.Actor
		delete(o.reserved, pool)
	}
}

// pool records the BlockAssigned and AddressClaimed events of pool's stream.
func (o *ownerFold) pool(pool string, e *events.Event) {
	switch p := e.Payload.(type) {
	case *events.BlockAssigned:
		r := projection.BlockRef{Pool: pool, Index: p.Index}
		if o.assigned[r] == nil {
			o.assigned[r] = map[string]bool{}
		}
		o.assigned[r][p.Node] = true
	case *events.AddressClaimed:
		if slices.Contains(p.Addrs, o.addr) {
			o.claims[[3]string{p.Node, p.ContainerID, p.IfName}] = true
		}
	}
}

// blockOwners returns every node that ever owned a block holding addr, as of rev: the
// cluster stream tells which blocks of which pools ever held addr (every definition of
// every pool, deleted ones too), the pool streams which nodes were assigned those blocks.
// Only those nodes can have assigned addr (a node assigns addresses from its own blocks
// only), so History reads just their streams. o holds what the archives gave (if any);
// the live events after them are folded in (the joins checked). ok is false when the
// cluster or pool streams cannot tell (their early events were archived and are in no
// archive given): then every node stream must be read.
func blockOwners(ctx context.Context, log events.Log, rev int64, o *ownerFold, arch *logio.Archives) (map[string]bool, bool, error) {
	cannotTell := func(err error) bool {
		return errors.Is(err, events.ErrCompacted) || errors.Is(err, logio.ErrArchiveGap)
	}
	heads, _, err := log.Streams(ctx, string(events.ClusterStream), rev)
	if err != nil {
		return nil, false, errors.Wrapf(err, "head of %s", events.ClusterStream)
	}
	err = readLive(ctx, log, events.ClusterStream, heads[events.ClusterStream], rev, arch, o.cluster)
	if cannotTell(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	pools := make([]string, 0, len(o.pools))
	for pool := range o.pools {
		pools = append(pools, pool)
	}
	sort.Strings(pools)
	if len(pools) > 0 {
		if heads, _, err = log.Streams(ctx, "pool/", rev); err != nil {
			return nil, false, errors.Wrap(err, "list pool streams")
		}
	}
	for _, pool := range pools {
		s := events.PoolStream(pool)
		err = readLive(ctx, log, s, heads[s], rev, arch, func(e *events.Event) error { o.pool(pool, e); return nil })
		if cannotTell(err) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	// In a pool with block streams each block's owners are in its own stream: read the
	// streams of the blocks that held addr.
	refs := slices.SortedFunc(maps.Keys(o.refs), func(a, b projection.BlockRef) int {
		return cmp.Or(cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Index, b.Index))
	})
	for _, r := range refs {
		s := events.BlockStream(r.Pool, r.Index)
		bheads, _, err := log.Streams(ctx, string(s), rev) // the stream itself (and any block/POOL/INDEXnn)
		if err != nil {
			return nil, false, errors.Wrapf(err, "head of %s", s)
		}
		err = readLive(ctx, log, s, bheads[s], rev, arch, func(e *events.Event) error { o.pool(r.Pool, e); return nil })
		if cannotTell(err) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	nodes := map[string]bool{}
	for r := range o.refs {
		for n := range o.assigned[r] {
			nodes[n] = true
		}
	}
	for c := range o.claims { // a claim's node need not own the block (docs/design.md, "Fixed addresses")
		nodes[c[0]] = true
	}
	return nodes, true, nil
}
