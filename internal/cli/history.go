package cli

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/events"
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
// owned its block are read (blockOwners). Events of other types and of other attachments are
// skipped as soon as their type or key is seen. It returns the holdings ordered by
// assignment time (then revision, node, sequence) and the revision read at.
func history(ctx context.Context, log events.Log, q *historyQuery) ([]*holding, int64, error) {
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
	per := make([][]*holding, len(streams))
	err = eachStream(ctx, log, streams, rev, func(i int, s events.Stream) func(*events.Event) error {
		_, node := s.Kind()
		open := map[[2]string]*holding{}
		return func(e *events.Event) error {
			switch p := e.Payload.(type) {
			case *events.AddressAssigned:
				if !q.match(p) {
					return nil
				}
				h := &holding{
					Addrs: p.Addrs, Pool: p.Pool, Block: p.Block, Node: node,
					ContainerID: p.ContainerID, IfName: p.IfName,
					PodNamespace: p.PodNamespace, PodName: p.PodName, PodUID: p.PodUID,
					From: e.Time, FromRevision: e.Revision, seq: e.Seq,
				}
				open[[2]string{p.ContainerID, p.IfName}] = h
				per[i] = append(per[i], h)
			case *events.AddressReleased:
				if len(open) == 0 {
					return nil
				}
				k := [2]string{p.ContainerID, p.IfName}
				if h := open[k]; h != nil {
					t := e.Time
					h.To, h.ToRevision, h.ReleaseReason, h.ReleasedBy = &t, e.Revision, p.Reason, e.Actor
					delete(open, k)
				}
			}
			return nil
		}
	})
	if err != nil {
		return nil, 0, err
	}
	var out []*holding
	for _, hs := range per {
		out = append(out, hs...)
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
release of the same container and interface on the same node. Rows are ordered by
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
			hs, rev, err := history(cmd.Context(), a.log, &q)
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
