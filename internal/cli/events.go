package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
	"github.com/coil-net/coil/projection"
	"github.com/coil-net/coil/readside"
)

func (a *app) eventsCommand() *cobra.Command {
	var f eventFlags
	c := &cobra.Command{
		Use:   "events",
		Short: "Print the event log in commit order across streams; -f to follow it",
		Long: `Print the event log in commit (etcd revision) order across all streams, read at one
revision. Filter by stream (exact name, or a prefix ending in "/"), type, node, pool,
container, pod and a window of revisions or times; the filters combine (all must hold).
--pod and --container (a prefix of 12 characters or more) read only the chunks of each
node stream that the attachment index says may mention them (see 'coilctl log index'),
also for the history -f prints first; the output is that of a full read.

--since and --until each take an RFC 3339 time (2030-01-07T14:00:00Z), a duration
meaning that long ago (2h, 3d, 1d12h) or an etcd revision (a plain integer); both ends
are inclusive: --since keeps events at or after it, --until at or before it.

With -f/--follow, after printing the matching history, keep printing matching events
as they are committed, like tail -f, until interrupted. Nothing is missed or printed
twice, also across etcd restarts and compaction.

-o json prints every event as one JSON object on its own line; -o wide adds the
event's hash and previous hash to the table.`,
		Example: `  coilctl events
  coilctl events --stream pool/ --type BlockAssigned,BlockReleased
  coilctl events --node worker-1 --since 2h
  coilctl events --pod default/web-0 -o wide
  coilctl events --stream node/worker-1 -o json | jq .payload
  coilctl events --pool default -f`,
		Args: argsUsage(0, 0, "no arguments (filter with --stream, --type, --node, --pool, --container, --pod, --since, --until)"),
		PersistentPreRunE: a.run(func(*cobra.Command, []string) error {
			// -o wide exists only here; the global check knows table, json and yaml.
			if a.opts.output == "wide" {
				f.wide = true
				a.opts.output = "table"
			}
			return a.checkGlobal()
		}),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			flt, err := f.filter(a.env.Clock.Now())
			if err != nil {
				return err
			}
			if err := a.connect(); err != nil {
				return err
			}
			return a.runEvents(cmd.Context(), flt, f.follow, f.wide)
		}),
	}
	f.add(c)
	return c
}

// eventFlags are the filters of coilctl events.
type eventFlags struct {
	stream       string
	types        []string
	node, pool   string
	container    string
	pod          string
	since, until string
	follow       bool
	wide         bool
}

func (f *eventFlags) add(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.stream, "stream", "", `only this stream ("cluster", "pool/NAME", "node/NAME"), or streams under a prefix ending in "/" ("pool/", "node/")`)
	fl.StringSliceVar(&f.types, "type", nil, "only these event types (repeat the flag or separate with commas), e.g. AddressAssigned,AddressReleased")
	fl.StringVar(&f.node, "node", "", "only events of node N: its stream node/N and block events about N in pool streams")
	fl.StringVar(&f.pool, "pool", "", "only events of pool P: its stream pool/P, address events in P, and P's definition in the cluster stream")
	fl.StringVar(&f.container, "container", "", "only address events of containers whose ID starts with this")
	fl.StringVar(&f.pod, "pod", "", "only address events of pod NAMESPACE/NAME (its assignments and their releases)")
	fl.StringVar(&f.since, "since", "", "only events at or after this: RFC 3339 time, duration ago (2h) or revision")
	fl.StringVar(&f.until, "until", "", "only events at or before this: RFC 3339 time, duration ago (2h) or revision")
	fl.BoolVarP(&f.follow, "follow", "f", false, "after the history, keep printing new events as they are committed (until interrupted)")
}

// eventFilter decides which events coilctl events shows. It is stateful (--pod pairs a
// release with the pod's assignment), so it must see every event of the streams it
// reads, in order.
type eventFilter struct {
	keepStream     func(events.Stream) bool
	keepType       func(events.Type) bool
	node, pool     string
	container      string
	podNS, podName string
	since, until   *readside.Point
	// podKeys are the node streams' attachments assigned to the --pod, until released.
	podKeys map[[3]string]bool
}

func (f *eventFlags) filter(now time.Time) (*eventFilter, error) {
	var flt eventFilter
	var err error
	if flt.keepStream, err = streamMatcher(f.stream); err != nil {
		return nil, err
	}
	if flt.keepType, err = typeMatcher(f.types); err != nil {
		return nil, err
	}
	if f.node != "" {
		if err := validName("--node", f.node); err != nil {
			return nil, err
		}
		flt.node = f.node
	}
	if f.pool != "" {
		if err := validName("--pool", f.pool); err != nil {
			return nil, err
		}
		flt.pool = f.pool
	}
	flt.container = strings.ToLower(f.container)
	if f.pod != "" {
		ns, name, ok := strings.Cut(f.pod, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, usagef("--pod %q: want NAMESPACE/NAME", f.pod)
		}
		flt.podNS, flt.podName, flt.podKeys = ns, name, map[[3]string]bool{}
	}
	if f.since != "" {
		p, err := parsePoint("--since", f.since, now)
		if err != nil {
			return nil, err
		}
		flt.since = &p
	}
	if f.until != "" {
		if f.follow {
			return nil, usagef("--until and --follow do not go together")
		}
		p, err := parsePoint("--until", f.until, now)
		if err != nil {
			return nil, err
		}
		flt.until = &p
	}
	return &flt, nil
}

// reads tells whether a stream can hold events the filter shows.
func (f *eventFilter) reads(s events.Stream) bool {
	if !f.keepStream(s) {
		return false
	}
	kind, name := s.Kind()
	switch {
	case f.node != "" && kind != "pool" && (kind != "node" || name != f.node):
		return false
	case f.pool != "" && kind == "node":
	case f.pool != "" && kind != "cluster" && name != f.pool:
		return false
	case (f.container != "" || f.podName != "") && kind != "node":
		return false
	}
	return true
}

// show decides one event; call it for every event read, in revision order.
func (f *eventFilter) show(e *events.Event) bool {
	if !f.reads(e.Stream) {
		return false
	}
	_, streamName := e.Stream.Kind()
	var container, ifName, pool, node string
	switch p := e.Payload.(type) {
	case *events.PoolCreated:
		pool = p.Name
	case *events.PoolSubnetAdded:
		pool = p.Name
	case *events.PoolDeleted:
		pool = p.Name
	case *events.BlockAssigned:
		node = p.Node
	case *events.BlockReleased:
		node = p.Node
	case *events.BlockReclaimed:
		node = p.Node
	case *events.AddressAssigned:
		container, ifName, pool = p.ContainerID, p.IfName, p.Pool
	case *events.AddressReleased:
		container, ifName, pool = p.ContainerID, p.IfName, p.Pool
	}
	if f.podKeys != nil {
		k := [3]string{string(e.Stream), container, ifName}
		switch p := e.Payload.(type) {
		case *events.AddressAssigned:
			if p.PodNamespace != f.podNS || p.PodName != f.podName {
				return false
			}
			f.podKeys[k] = true
		case *events.AddressReleased:
			if !f.podKeys[k] {
				return false
			}
			delete(f.podKeys, k)
		default:
			return false
		}
	}
	kind, _ := e.Stream.Kind()
	switch {
	case !f.keepType(e.Type()):
		return false
	case f.node != "" && kind == "pool" && node != f.node:
		return false
	case f.pool != "" && kind != "pool" && pool != f.pool:
		return false
	case f.pool != "" && kind == "pool" && streamName != f.pool:
		return false
	case f.container != "" && (container == "" || !strings.HasPrefix(container, f.container)):
		return false
	case f.since != nil && !f.since.NotBefore(e):
		return false
	case f.until != nil && !f.until.Includes(e):
		return false
	}
	return true
}

// runEvents prints the matching history at one revision, then, with follow, watches from
// that revision (every stream's head as read) and prints what matches until ctx ends.
// --pod and --container use the attachment index for the history (readEvents): the
// events it skips are ones flt.show rejects without changing its state, so the filter
// follows from the heads read as after a full read.
func (a *app) runEvents(ctx context.Context, flt *eventFilter, follow, wide bool) error {
	heads, rev, err := a.log.Streams(ctx, "", 0)
	if err != nil {
		return errors.Wrap(err, "list streams")
	}
	ix := &historyIndex{cli: a.cli, keys: events.NewKeys(a.opts.prefix), timeout: a.opts.timeout}
	evs, err := readEvents(ctx, a.log, ix, flt, heads, rev)
	if err != nil {
		return err
	}
	pr := a.newEventPrinter(wide, follow)
	if err := pr.print(evs, flt.show); err != nil {
		return err
	}
	if err := pr.flush(); err != nil || !follow {
		return err
	}
	after := make(map[events.Stream]uint64, len(heads))
	for s, v := range heads {
		after[s] = v.Seq
	}
	for b := range a.log.Watch(ctx, events.WatchRequest{FromRev: rev, After: after}) {
		if b.Err != nil {
			return errors.Wrap(b.Err, "follow the log")
		}
		if err := pr.print(b.Events, flt.show); err != nil {
			return err
		}
		if err := pr.flush(); err != nil {
			return err
		}
	}
	return nil // interrupted: tail -f ends with success
}

// readEvents reads, at rev, the streams of heads that flt reads and the cluster stream
// (always: summaries need the pools' geometry), readWorkers streams at once, and returns
// their events in revision order. With ix set and a filter the index can narrow (--pod,
// or --container with a prefix of 12 characters or more: eventFilter.indexQuery), each
// node stream reads only the chunks that may mention the pod or container (or the
// container of an assignment of the pod still open: its release), every unindexed range
// and the tail (historyIndex.read); the events skipped are ones flt.show rejects and
// whose absence does not change its state, so what it shows is what the full read shows.
func readEvents(ctx context.Context, log events.Log, ix *historyIndex, flt *eventFilter,
	heads map[events.Stream]events.Version, rev int64) ([]*events.Event, error) {
	streams := readside.StreamsOf(heads, func(s events.Stream) bool { return s == events.ClusterStream || flt.reads(s) })
	q, key, indexed := flt.indexQuery()
	var entries map[events.Stream][]*logindex.Entry
	if indexed && ix != nil && len(streams) > 0 {
		var err error
		if entries, err = ix.load(ctx, rev); err != nil {
			return nil, err
		}
	}
	per := make([][]*events.Event, len(streams))
	err := readside.Parallel(ctx, 0, len(streams), func(ctx context.Context, i int) error {
		s := streams[i]
		collect := func(e *events.Event) error { per[i] = append(per[i], e); return nil }
		r := chunkRead{visit: collect, full: func(ctx context.Context) error { return readStream(ctx, log, s, rev, collect) }}
		if len(entries[s]) > 0 {
			p := newPairing(q, s)
			r.want = p.wants(key)
			r.visit = func(e *events.Event) error { per[i] = append(per[i], e); return p.visit(e) }
		}
		return ix.read(ctx, log, s, heads[s], rev, entries[s], nil, r)
	})
	if err != nil {
		return nil, err
	}
	var evs []*events.Event
	for _, p := range per {
		evs = append(evs, p...)
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Revision < evs[j].Revision })
	return evs, nil
}

// indexQuery is the attachment-index query of the filter (the pod's if --pod is given,
// else the container prefix's) and its key, and false when the index cannot narrow the
// filter (neither is given, or the prefix is shorter than 12 characters).
func (f *eventFilter) indexQuery() (*historyQuery, string, bool) {
	var q historyQuery
	switch {
	case f.podName != "":
		q.podNS, q.podName = f.podNS, f.podName
	case f.container != "":
		q.container = f.container
	default:
		return nil, "", false
	}
	key, ok := q.indexKey()
	return &q, key, ok
}

// eventPrinter prints events in one output format, folding the cluster stream as it goes
// (summaries show block prefixes as the pools were at that point of the log).
type eventPrinter struct {
	a       *app
	wide    bool
	follow  bool
	cluster *projection.Cluster
	t       *table
	all     []*events.Event // -o yaml without --follow: printed as one list at the end
}

func (a *app) newEventPrinter(wide, follow bool) *eventPrinter {
	p := &eventPrinter{a: a, wide: wide, follow: follow, cluster: projection.NewCluster(), all: []*events.Event{}}
	if a.opts.output == "table" {
		if wide {
			p.t = newTable(a.env.Stdout, "REV", "TIME", "STREAM", "SEQ", "TYPE", "ACTOR", "HASH", "PREV", "SUMMARY")
		} else {
			p.t = newTable(a.env.Stdout, "REV", "TIME", "STREAM", "SEQ", "TYPE", "ACTOR", "SUMMARY")
		}
	}
	return p
}

// print prints the events show accepts; every cluster event (shown or not) is folded.
func (p *eventPrinter) print(evs []*events.Event, show func(*events.Event) bool) error {
	for _, e := range evs {
		if show(e) {
			if err := p.one(e); err != nil {
				return err
			}
		}
		if e.Stream == events.ClusterStream {
			if err := p.cluster.Apply(e); err != nil {
				return errors.Wrapf(err, "fold cluster #%d", e.Seq)
			}
		}
	}
	return nil
}

func (p *eventPrinter) one(e *events.Event) error {
	w := p.a.env.Stdout
	switch p.a.opts.output {
	case "table":
		if p.wide {
			prev := "-"
			if !e.Prev.IsZero() {
				prev = e.Prev.String()[:12]
			}
			p.t.row(fmt.Sprint(e.Revision), e.Time.UTC().Format(time.RFC3339Nano), string(e.Stream), fmt.Sprint(e.Seq),
				string(e.Type()), e.Actor, e.Hash.String()[:12], prev, summary(e, p.cluster))
		} else {
			p.t.row(fmt.Sprint(e.Revision), fmtTime(e.Time), string(e.Stream), fmt.Sprint(e.Seq), string(e.Type()), e.Actor, summary(e, p.cluster))
		}
	case "json":
		b, err := json.Marshal(e) // events' own JSON form (events/json.go)
		if err != nil {
			return errors.Wrapf(err, "render %s #%d", e.Stream, e.Seq)
		}
		if _, err := fmt.Fprintf(w, "%s\n", b); err != nil {
			return errors.Wrap(err, "write output")
		}
	default:
		if !p.follow {
			p.all = append(p.all, e)
			return nil
		}
		// Following: one YAML list item per event, so the output stays one valid list.
		b, err := yaml.Marshal([]*events.Event{e})
		if err != nil {
			return errors.Wrapf(err, "render %s #%d", e.Stream, e.Seq)
		}
		if _, err := w.Write(b); err != nil {
			return errors.Wrap(err, "write output")
		}
	}
	return nil
}

// flush writes what is buffered: the table's rows, or (-o yaml, not following) the list.
func (p *eventPrinter) flush() error {
	switch {
	case p.t != nil:
		return p.t.flush()
	case p.a.opts.output == "yaml" && !p.follow:
		return p.a.printValue(p.all)
	}
	return nil
}

func streamMatcher(f string) (func(events.Stream) bool, error) {
	switch {
	case f == "":
		return func(events.Stream) bool { return true }, nil
	case strings.HasSuffix(f, "/"):
		return func(s events.Stream) bool { return strings.HasPrefix(string(s), f) }, nil
	}
	if err := events.Stream(f).Validate(); err != nil {
		return nil, errors.Mark(errors.Wrap(err, "--stream"), ErrUsage)
	}
	return func(s events.Stream) bool { return string(s) == f }, nil
}

func typeMatcher(ts []string) (func(events.Type) bool, error) {
	if len(ts) == 0 {
		return func(events.Type) bool { return true }, nil
	}
	want := map[events.Type]bool{}
	for _, t := range ts {
		t = strings.TrimSpace(t)
		if _, ok := events.NewPayload(events.Type(t)); !ok {
			names := make([]string, 0, len(events.AllTypes()))
			for _, k := range events.AllTypes() {
				names = append(names, string(k))
			}
			return nil, usagef("--type %q is not an event type (one of: %s)", t, strings.Join(names, ", "))
		}
		want[events.Type(t)] = true
	}
	return func(t events.Type) bool { return want[t] }, nil
}

// summary is a one-line readable account of an event; cluster is the pools' state just
// before it (for block prefixes).
func summary(e *events.Event, cluster *projection.Cluster) string {
	_, streamName := e.Stream.Kind()
	block := func(index uint32) string {
		if p := cluster.Pools[streamName]; p != nil {
			if ps, ok := p.Block(index); ok {
				return fmt.Sprintf("block %d (%s)", index, joinPrefixes(ps))
			}
		}
		return fmt.Sprintf("block %d", index)
	}
	because := func(reason string) string {
		if reason == "" {
			return ""
		}
		return ": " + reason
	}
	switch p := e.Payload.(type) {
	case *events.PoolCreated:
		bits := p.BlockSizeBits
		return fmt.Sprintf("pool %s: %s, blocks of %d addresses", p.Name, strings.Join(subnetStrings(p.Subnets), " "), uint64(1)<<bits)
	case *events.PoolSubnetAdded:
		return fmt.Sprintf("pool %s += %s", p.Name, subnetString(p.Subnet))
	case *events.PoolDeleted:
		return fmt.Sprintf("pool %s deleted", p.Name)
	case *events.BlockAssigned:
		return fmt.Sprintf("%s -> %s", block(p.Index), p.Node)
	case *events.BlockReleased:
		return fmt.Sprintf("%s released by %s%s", block(p.Index), p.Node, because(p.Reason))
	case *events.BlockReclaimed:
		return fmt.Sprintf("%s reclaimed from %s%s", block(p.Index), p.Node, because(p.Reason))
	case *events.AddressAssigned:
		att := shortID(p.ContainerID) + "/" + p.IfName
		if pod := podName(p.PodNamespace, p.PodName); pod != "" {
			return fmt.Sprintf("%s -> %s (%s)", joinAddrs(p.Addrs), pod, att)
		}
		return fmt.Sprintf("%s -> %s", joinAddrs(p.Addrs), att)
	case *events.AddressReleased:
		return fmt.Sprintf("%s released by %s/%s%s", joinAddrs(p.Addrs), shortID(p.ContainerID), p.IfName, because(p.Reason))
	case *events.NodeRegistered:
		return fmt.Sprintf("node %s registered, lease %x", p.Node, p.Lease)
	case *events.NodeRetired:
		return fmt.Sprintf("node %s retired%s", p.Node, because(p.Reason))
	case *events.Snapshot:
		return fmt.Sprintf("snapshot of %s, state %s..", e.Stream, p.StateHash.String()[:12])
	}
	return string(e.Type())
}
