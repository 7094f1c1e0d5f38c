package cli

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
	"github.com/coil-net/coil/logio"
	"github.com/coil-net/coil/projection"
	"github.com/coil-net/coil/readside"
)

// holding is one attachment's tenure of its addresses: from its AddressAssigned to the
// AddressReleased of the same container and interface on the same node (if any yet).
type holding struct {
	Addrs        []netip.Addr `json:"addrs"`
	Pool         string       `json:"pool"`
	Block        uint32       `json:"block"`
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
	// ReleasedBy is the actor of the release (the node, or coilctl:USER for a reclaim).
	ReleasedBy string `json:"releasedBy,omitempty"`

	seq uint64 // sequence of the assignment in its node stream (ordering ties)
}

// holdsAt reports whether the holding covered time t (from inclusive, to exclusive).
func (h *holding) holdsAt(t time.Time) bool {
	return !h.From.After(t) && (h.To == nil || h.To.After(t))
}

// historyQuery selects the assignments history reports: by address, container ID prefix
// or pod (exactly one is set).
type historyQuery struct {
	addr      netip.Addr
	container string
	podNS     string
	podName   string
}

func (q *historyQuery) match(p *events.AddressAssigned) bool {
	switch {
	case q.addr.IsValid():
		for _, a := range p.Addrs {
			if a == q.addr {
				return true
			}
		}
		return false
	case q.container != "":
		return strings.HasPrefix(p.ContainerID, q.container)
	}
	return p.PodName == q.podName && p.PodNamespace == q.podNS
}

func (q *historyQuery) String() string {
	switch {
	case q.addr.IsValid():
		return "address " + q.addr.String()
	case q.container != "":
		return "container " + q.container
	}
	return "pod " + q.podNS + "/" + q.podName
}

// history reads the node streams at one revision (readWorkers streams at once) and pairs
// each matching AddressAssigned with the next AddressReleased of the same container and
// interface in that node's stream. With archive files (logio.ReadArchives: any order,
// verified as one chain per stream), their events are read first, in one streaming pass,
// and each stream's live events continue them (the join checked: joinLive), so a holding
// may span the archive's end. For an address, only the streams of the nodes that ever
// owned its block are read live (blockOwners, fed the archived cluster and pool events
// too). For a pod or a container ID prefix of 12 characters or more, with ix set, the
// attachment index narrows each stream's live read to the chunks that may mention it
// (historyIndex.read); the result is the same as a full read. Events of other types and
// of other attachments are skipped as soon as their type or key is seen. It returns the
// holdings ordered by assignment time (then revision, node, sequence) and the revision
// read at. A stream whose early events were archived and are in no archive given fails
// (ErrCompacted or logio.ErrArchiveGap) saying to pass them with --archive.
func history(ctx context.Context, log events.Log, q *historyQuery, ix *historyIndex, archives []string) ([]*holding, int64, error) {
	heads, rev, err := log.Streams(ctx, "node/", 0)
	if err != nil {
		return nil, 0, errors.Wrap(err, "list node streams")
	}
	var owners *ownerFold
	if q.addr.IsValid() {
		owners = newOwnerFold(q.addr)
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
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	keep := func(events.Stream) bool { return true }
	if owners != nil {
		nodes, ok, berr := blockOwners(ctx, log, rev, owners, arch)
		if berr != nil {
			return nil, 0, berr
		}
		if ok {
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
	streams := readside.StreamsOf(heads, keep)
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
	err = readside.Parallel(ctx, 0, len(streams), func(ctx context.Context, i int) error {
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
	var out []*holding
	for _, s := range readside.StreamsOf(heads, keep) {
		out = append(out, per[s].out...)
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

// indexKey is the attachment-index key of the query (logindex.PodKey or
// logindex.ContainerKey), and false when the index cannot narrow it: an address, or a
// container ID prefix shorter than 12 characters.
func (q *historyQuery) indexKey() (string, bool) {
	switch {
	case q.addr.IsValid():
		return "", false
	case q.container != "":
		return logindex.ContainerQueryKey(q.container)
	}
	return logindex.PodKey(q.podNS, q.podName), true
}

// pairing pairs one node stream's matching assignments with their releases, fed the
// stream's events in sequence order (all of them, or every chunk that may mention the
// query or a holding still open).
type pairing struct {
	q    *historyQuery
	node string
	open map[[2]string]*holding // container ID and interface -> holding not released yet
	out  []*holding
}

// newPairing is the empty pairing of node stream s for q.
func newPairing(q *historyQuery, s events.Stream) *pairing {
	_, node := s.Kind()
	return &pairing{q: q, node: node, open: map[[2]string]*holding{}}
}

// wants is the chunk test of an indexed read for p (historyIndex.read): a chunk must be
// read if it may mention key (the query's index key) or the container of a holding still
// open (its release).
func (p *pairing) wants(key string) func(*logindex.Entry) bool {
	return func(e *logindex.Entry) bool { return e.MayContain(key) || mayContainOpen(e, p.open) }
}

func (p *pairing) visit(e *events.Event) error {
	switch pl := e.Payload.(type) {
	case *events.AddressAssigned:
		if !p.q.match(pl) {
			return nil
		}
		h := &holding{
			Addrs: pl.Addrs, Pool: pl.Pool, Block: pl.Block, Node: p.node,
			ContainerID: pl.ContainerID, IfName: pl.IfName,
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

// historyIndex is what history and events need to use the attachment index.
type historyIndex struct {
	cli     *clientv3.Client
	keys    events.Keys
	timeout time.Duration // per stream, as timeoutLog bounds a stream's read

	chunksRead, chunksSkipped atomic.Int64
}

// load returns the index entries of every node stream as stored at rev (one range read,
// bounded by ix.timeout; logindex.Load).
func (ix *historyIndex) load(ctx context.Context, rev int64) (map[events.Stream][]*logindex.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, ix.timeout)
	defer cancel()
	entries, err := logindex.Load(ctx, ix.cli, ix.keys, "", rev)
	if err != nil {
		return nil, errors.Wrapf(err, "load the attachment index at revision %d", rev)
	}
	return entries, nil
}

// chunkRead is what historyIndex.read does with one stream.
type chunkRead struct {
	// want reports whether an indexed chunk must be read; it may change its answer as
	// visit sees events (pairing.wants).
	want func(*logindex.Entry) bool
	// visit is fed the events read, in sequence order.
	visit func(*events.Event) error
	// full reads the stream without the index (feeding visit), as the caller would.
	full func(ctx context.Context) error
}

// read feeds r.visit the events of stream s (head at rev) that r.want may need and that
// the archives (nil: none) do not hold (from #1, or after the archives' last event, the
// join checked by joinLive): entries are the stream's index entries; with none (or ix
// nil), it is r.full. Entries that no longer match the log, or that start before the live
// read, are ignored (logindex.Verify, logindex.Segments). A stream whose event #1 is
// archived and in no archive given is read by r.full (which fails as the full read
// does). Otherwise one forward pass over the segments reads a chunk iff r.want accepts
// its entry, and reads every unindexed range (chunks missing anywhere, the tail after the
// last entry). The hash chain is checked within each read and across the skipped chunks
// through their entries' hashes, up to the head.
func (ix *historyIndex) read(ctx context.Context, log events.Log, s events.Stream, head events.Version, rev int64,
	entries []*logindex.Entry, arch *logio.Archives, r chunkRead) error {
	if ix == nil || len(entries) == 0 {
		return r.full(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, ix.timeout)
	defer cancel()
	from, err := joinLive(ctx, log, s, head, rev, arch)
	if err != nil || from == 0 {
		return err
	}
	valid, hasFirst, err := logindex.Verify(ctx, ix.cli, ix.keys, s, entries, rev)
	if err != nil {
		return err
	}
	if (from == 1 && !hasFirst) || len(valid) == 0 {
		return r.full(ctx)
	}
	last := arch.Last(s) // the version of the event before the next segment
	for _, seg := range logindex.Segments(valid, from, head.Seq) {
		if e := seg.Entry; e != nil && !r.want(e) {
			ix.chunksSkipped.Add(1)
			last = events.Version{Seq: e.Last, Hash: e.Hash}
			continue
		}
		if seg.Entry != nil {
			ix.chunksRead.Add(1)
		}
		prev := &last
		if seg.First == 1 {
			prev = nil
		}
		if last, err = logindex.ReadRange(ctx, ix.cli, ix.keys, s, seg.First, seg.Last, rev, prev, r.visit); err != nil {
			return errors.Wrapf(err, "read %s #%d-#%d at revision %d", s, seg.First, seg.Last, rev)
		}
	}
	if last != head {
		return errors.Wrapf(events.ErrChainBroken, "%s: head is #%d %s but the read ended at #%d %s",
			s, head.Seq, head.Hash, last.Seq, last.Hash)
	}
	return nil
}

// mayContainOpen reports whether e may mention the container of a holding still open.
func mayContainOpen(e *logindex.Entry, open map[[2]string]*holding) bool {
	for k := range open {
		if e.MayContain(logindex.ContainerKey(k[0])) {
			return true
		}
	}
	return false
}

// blockRef is a block of a pool definition: the pool's name and the block's index.
type blockRef struct {
	pool  string
	index uint32
}

// ownerFold gathers what blockOwners needs, fed the cluster stream's events (folded: which
// blocks of which pools ever held addr) and the pool streams' BlockAssigned events (which
// nodes were assigned which blocks; all of them, as a pool's events may come before the
// cluster events that tell whether they matter).
type ownerFold struct {
	addr     netip.Addr
	fold     *projection.Cluster
	refs     map[blockRef]bool
	pools    map[string]bool
	assigned map[blockRef]map[string]bool // block -> nodes ever assigned it
}

func newOwnerFold(addr netip.Addr) *ownerFold {
	return &ownerFold{addr: addr, fold: projection.NewCluster(), refs: map[blockRef]bool{}, pools: map[string]bool{},
		assigned: map[blockRef]map[string]bool{}}
}

// cluster folds one cluster event, in sequence order.
func (o *ownerFold) cluster(e *events.Event) error {
	if err := o.fold.Apply(e); err != nil {
		return errors.Wrapf(err, "fold cluster #%d", e.Seq)
	}
	var name string
	switch p := e.Payload.(type) {
	case *events.PoolCreated:
		name = p.Name
	case *events.PoolSubnetAdded:
		name = p.Name
	default:
		return nil
	}
	if p := o.fold.Pools[name]; p != nil {
		if idx, _, ok := p.Locate(o.addr); ok {
			o.refs[blockRef{name, idx}] = true
			o.pools[name] = true
		}
	}
	return nil
}

// pool records the BlockAssigned events of pool's stream.
func (o *ownerFold) pool(pool string, e *events.Event) {
	if p, ok := e.Payload.(*events.BlockAssigned); ok {
		r := blockRef{pool, p.Index}
		if o.assigned[r] == nil {
			o.assigned[r] = map[string]bool{}
		}
		o.assigned[r][p.Node] = true
	}
}

// blockOwners returns every node that ever owned a block holding addr, as of rev: the
// cluster stream tells which blocks of which pools ever held addr (every definition of
// every pool, deleted ones too), the pool streams which nodes were assigned those blocks.
// Only those nodes can have assigned addr (a node assigns addresses from its own blocks
// only), so history reads just their streams. o holds what the archives gave (if any);
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
	nodes := map[string]bool{}
	for r := range o.refs {
		for n := range o.assigned[r] {
			nodes[n] = true
		}
	}
	return nodes, true, nil
}

func (a *app) historyCommand() *cobra.Command {
	var container, pod, at string
	var archives []string
	c := &cobra.Command{
		Use:   "history (ADDRESS | --container ID | --pod NAMESPACE/NAME) [--archive FILE]...",
		Short: "Every holder of an address over time, or every address a container or pod had",
		Long: `Print every holder an address ever had, from the log: container, interface, pod,
node, when it was assigned (FROM) and released (TO, "-" while still held) and why it
was released. With --container (a prefix of the container ID) or --pod, print every
address that container or pod ever had instead.

All node streams are read at one etcd revision. An assignment is paired with the next
release of the same container and interface on the same node. --pod and --container
(a prefix of 12 characters or more) read only the chunks of each node stream that the
attachment index says may mention them (see 'coilctl log index'); shorter prefixes read
every stream in full. Rows are ordered by
assignment time. With --at, only the holdings that covered that moment are printed:
"who had 10.1.2.3 at 14:00 last Tuesday?".

Once early events were archived ('coilctl log archive'), history needs them: pass the
archive files with --archive FILE (repeat it for the files of several archive runs, in
any order). Their events are verified (as 'coilctl log verify --file' does) and read
first, and each stream of the live log must continue them (sequence and hash chain),
so the output is what history printed before the archive. Without them, history of an
archived stream fails, naming the stream and what to pass.

Exit 3 when nothing matches.`,
		Example: `  coilctl history 10.64.3.7
  coilctl history 10.64.3.7 --at 2030-01-07T14:00:00Z
  coilctl history --pod default/web-0
  coilctl history --container 4f2a91 -o json
  coilctl history 10.64.3.7 --archive 2030-01.jsonl --archive 2030-02.jsonl`,
		Args: argsUsage(0, 1, "one ADDRESS, or none with --container or --pod"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			bulkGC() // reads whole streams: see log.go
			var q historyQuery
			given := 0
			if len(args) == 1 {
				addr, err := netip.ParseAddr(args[0])
				if err != nil || addr.Zone() != "" {
					return usagef("%q is not an IP address (like 10.64.0.5 or fd00::5)", args[0])
				}
				q.addr = addr.Unmap()
				given++
			}
			if container != "" {
				q.container = strings.ToLower(container)
				given++
			}
			if pod != "" {
				ns, name, ok := strings.Cut(pod, "/")
				if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
					return usagef("--pod %q: want NAMESPACE/NAME", pod)
				}
				q.podNS, q.podName = ns, name
				given++
			}
			if given != 1 {
				return usagef("give exactly one of ADDRESS, --container or --pod")
			}
			var atPoint *readside.Point
			if at != "" {
				p, err := parsePoint("--at", at, a.env.Clock.Now())
				if err != nil {
					return err
				}
				if p.Rev != 0 {
					return usagef("--at %q: history --at takes a time or a duration, not a revision", at)
				}
				atPoint = &p
			}
			if err := a.connect(); err != nil {
				return err
			}
			ix := &historyIndex{cli: a.cli, keys: events.NewKeys(a.opts.prefix), timeout: a.opts.timeout}
			hs, rev, err := history(cmd.Context(), a.log, &q, ix, archives)
			if err != nil {
				return err
			}
			if atPoint != nil {
				kept := hs[:0]
				for _, h := range hs {
					if h.holdsAt(atPoint.Time) {
						kept = append(kept, h)
					}
				}
				hs = kept
			}
			if len(hs) == 0 {
				when := "in the log"
				if atPoint != nil {
					when = "at " + atPoint.Time.UTC().Format(time.RFC3339)
				}
				return errors.Mark(errors.Newf("no assignment of %s %s (log read at revision %d)", q.String(), when, rev), ErrNotFound)
			}
			return a.printHistory(hs)
		}),
	}
	c.Flags().StringVar(&container, "container", "", "every address of the container whose ID starts with this (case-insensitive hex)")
	c.Flags().StringVar(&pod, "pod", "", "every address of the pod NAMESPACE/NAME")
	c.Flags().StringVar(&at, "at", "", "only who held it at this moment: an RFC 3339 time, or a duration meaning that long ago (2h, 3d)")
	c.Flags().StringArrayVar(&archives, "archive", nil, "read the archived events of this file first (from 'coilctl log archive'; repeat for several, any order)")
	return c
}

func (a *app) printHistory(hs []*holding) error {
	if a.opts.output != "table" {
		return a.printValue(hs)
	}
	t := newTable(a.env.Stdout, "ADDRESS", "FROM", "TO", "NODE", "POD", "CONTAINER", "IF", "POOL", "RELEASE REASON")
	for _, h := range hs {
		to := ""
		reason := ""
		if h.To != nil {
			to = fmtTime(*h.To)
			reason = h.ReleaseReason
			if reason == "" {
				reason = "(none given)"
			}
		}
		t.row(joinAddrs(h.Addrs), fmtTime(h.From), to, h.Node, podName(h.PodNamespace, h.PodName),
			shortID(h.ContainerID), h.IfName, fmt.Sprintf("%s#%d", h.Pool, h.Block), reason)
	}
	return t.flush()
}
