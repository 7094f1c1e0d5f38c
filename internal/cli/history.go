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
	"github.com/coil-net/coil/projection"
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
// interface in that node's stream. For an address, only the streams of the nodes that ever
// owned its block are read (blockOwners). For a pod or a container ID prefix of 12
// characters or more, with ix set, the attachment index narrows each stream's read to the
// chunks that may mention it (historyIndex.read); the result is the same as a full read.
// Events of other types and of other attachments are skipped as soon as their type or key
// is seen. It returns the holdings ordered by assignment time (then revision, node,
// sequence) and the revision read at.
func history(ctx context.Context, log events.Log, q *historyQuery, ix *historyIndex) ([]*holding, int64, error) {
	heads, rev, err := log.Streams(ctx, "node/", 0)
	if err != nil {
		return nil, 0, errors.Wrap(err, "list node streams")
	}
	keep := func(events.Stream) bool { return true }
	if q.addr.IsValid() {
		nodes, ok, berr := blockOwners(ctx, log, rev, q.addr)
		if berr != nil {
			return nil, 0, berr
		}
		if ok {
			keep = func(s events.Stream) bool { _, n := s.Kind(); return nodes[n] }
		}
	}
	streams := streamsOf(heads, keep)
	per := make([]*pairing, len(streams))
	for i, s := range streams {
		_, node := s.Kind()
		per[i] = &pairing{q: q, node: node, open: map[[2]string]*holding{}}
	}
	var entries map[events.Stream][]*logindex.Entry
	key, indexed := q.indexKey()
	if indexed && ix != nil && len(streams) > 0 {
		lctx, cancel := context.WithTimeout(ctx, ix.timeout)
		entries, err = logindex.Load(lctx, ix.cli, ix.keys, "", rev)
		cancel()
		if err != nil {
			return nil, 0, errors.Wrapf(err, "load the attachment index at revision %d", rev)
		}
	}
	err = parallel(ctx, len(streams), func(ctx context.Context, i int) error {
		s := streams[i]
		if es := entries[s]; len(es) > 0 {
			return ix.read(ctx, log, s, heads[s], rev, es, key, per[i])
		}
		if _, rerr := log.Read(ctx, s, 1, rev, per[i].visit); rerr != nil {
			return errors.Wrapf(rerr, "read %s at revision %d", s, rev)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	var out []*holding
	for _, p := range per {
		out = append(out, p.out...)
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

// historyIndex is what history needs to use the attachment index.
type historyIndex struct {
	cli     *clientv3.Client
	keys    events.Keys
	timeout time.Duration // per stream, as timeoutLog bounds a stream's read

	chunksRead, chunksSkipped atomic.Int64
}

// read feeds p the events of stream s (head at rev) that may matter to the query key:
// entries are the stream's index entries. Entries that no longer match the log are
// ignored (logindex.Verify). A stream whose event #1 is archived is read as the full scan
// reads it (which fails the same way). Otherwise one forward pass over the segments
// (logindex.Segments) reads a chunk iff its filter may hold key or the container key of
// a holding still open, and reads every unindexed range (chunks missing anywhere, the tail
// after the last entry). The hash chain is checked within each read and across the
// skipped chunks through their entries' hashes, up to the head.
func (ix *historyIndex) read(ctx context.Context, log events.Log, s events.Stream, head events.Version, rev int64,
	entries []*logindex.Entry, key string, p *pairing) error {
	ctx, cancel := context.WithTimeout(ctx, ix.timeout)
	defer cancel()
	valid, hasFirst, err := logindex.Verify(ctx, ix.cli, ix.keys, s, entries, rev)
	if err != nil {
		return err
	}
	if !hasFirst || len(valid) == 0 {
		if _, rerr := log.Read(ctx, s, 1, rev, p.visit); rerr != nil {
			return errors.Wrapf(rerr, "read %s at revision %d", s, rev)
		}
		return nil
	}
	var last events.Version // the version of the event before the next segment
	for _, seg := range logindex.Segments(valid, 1, head.Seq) {
		if e := seg.Entry; e != nil && !e.MayContain(key) && !mayContainOpen(e, p.open) {
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
		if last, err = logindex.ReadRange(ctx, ix.cli, ix.keys, s, seg.First, seg.Last, rev, prev, p.visit); err != nil {
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

// blockOwners returns every node that ever owned a block holding addr, as of rev: the
// cluster stream tells which blocks of which pools ever held addr (every definition of
// every pool, deleted ones too), the pool streams which nodes were assigned those blocks.
// Only those nodes can have assigned addr (a node assigns addresses from its own blocks
// only), so history reads just their streams. ok is false when the pool streams cannot
// tell (their early events were archived): then every node stream must be read.
func blockOwners(ctx context.Context, log events.Log, rev int64, addr netip.Addr) (map[string]bool, bool, error) {
	type ref struct {
		pool  string
		index uint32
	}
	refs := map[ref]bool{}
	pools := map[string]bool{}
	cluster := projection.NewCluster()
	_, err := log.Read(ctx, events.ClusterStream, 1, rev, func(e *events.Event) error {
		if err := cluster.Apply(e); err != nil {
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
		if p := cluster.Pools[name]; p != nil {
			if idx, _, ok := p.Locate(addr); ok {
				refs[ref{name, idx}] = true
				pools[name] = true
			}
		}
		return nil
	})
	if errors.Is(err, events.ErrCompacted) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, errors.Wrapf(err, "read %s at revision %d", events.ClusterStream, rev)
	}
	nodes := map[string]bool{}
	for pool := range pools {
		_, err := log.Read(ctx, events.PoolStream(pool), 1, rev, func(e *events.Event) error {
			if p, ok := e.Payload.(*events.BlockAssigned); ok && refs[ref{pool, p.Index}] {
				nodes[p.Node] = true
			}
			return nil
		})
		if errors.Is(err, events.ErrCompacted) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, errors.Wrapf(err, "read %s at revision %d", events.PoolStream(pool), rev)
		}
	}
	return nodes, true, nil
}

func (a *app) historyCommand() *cobra.Command {
	var container, pod, at string
	c := &cobra.Command{
		Use:   "history (ADDRESS | --container ID | --pod NAMESPACE/NAME)",
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

Exit 3 when nothing matches.`,
		Example: `  coilctl history 10.64.3.7
  coilctl history 10.64.3.7 --at 2030-01-07T14:00:00Z
  coilctl history --pod default/web-0
  coilctl history --container 4f2a91 -o json`,
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
			var atPoint *point
			if at != "" {
				p, err := parsePoint("--at", at, a.env.Clock.Now())
				if err != nil {
					return err
				}
				if p.rev != 0 {
					return usagef("--at %q: history --at takes a time or a duration, not a revision", at)
				}
				atPoint = &p
			}
			if err := a.connect(); err != nil {
				return err
			}
			ix := &historyIndex{cli: a.cli, keys: events.NewKeys(a.opts.prefix), timeout: a.opts.timeout}
			hs, rev, err := history(cmd.Context(), a.log, &q, ix)
			if err != nil {
				return err
			}
			if atPoint != nil {
				kept := hs[:0]
				for _, h := range hs {
					if h.holdsAt(atPoint.time) {
						kept = append(kept, h)
					}
				}
				hs = kept
			}
			if len(hs) == 0 {
				when := "in the log"
				if atPoint != nil {
					when = "at " + atPoint.time.UTC().Format(time.RFC3339)
				}
				return errors.Mark(errors.Newf("no assignment of %s %s (log read at revision %d)", q.String(), when, rev), ErrNotFound)
			}
			return a.printHistory(hs)
		}),
	}
	c.Flags().StringVar(&container, "container", "", "every address of the container whose ID starts with this (case-insensitive hex)")
	c.Flags().StringVar(&pod, "pod", "", "every address of the pod NAMESPACE/NAME")
	c.Flags().StringVar(&at, "at", "", "only who held it at this moment: an RFC 3339 time, or a duration meaning that long ago (2h, 3d)")
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
