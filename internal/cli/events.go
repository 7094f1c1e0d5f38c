package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
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
also for the history -f prints first; the output is that of a full read. They also show
the pod's or container's fixed-address claims (AddressClaimed, AddressClaimReleased),
read from the pool streams in full.

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
	fl.StringVar(&f.stream, "stream", "", `only this stream ("cluster", "pool/NAME", "block/POOL/INDEX", "node/NAME"), or streams under a prefix ending in "/" ("pool/", "block/POOL/", "node/")`)
	fl.StringSliceVar(&f.types, "type", nil, "only these event types (repeat the flag or separate with commas), e.g. AddressAssigned,AddressReleased")
	fl.StringVar(&f.node, "node", "", "only events of node N: its stream node/N and block events about N in pool streams")
	fl.StringVar(&f.pool, "pool", "", "only events of pool P: its stream pool/P, address events in P, and P's definition in the cluster stream")
	fl.StringVar(&f.container, "container", "", "only address events of containers whose ID starts with this")
	fl.StringVar(&f.pod, "pod", "", "only address events of pod NAMESPACE/NAME (its assignments and their releases, its fixed-address claims and their ends)")
	fl.StringVar(&f.since, "since", "", "only events at or after this: RFC 3339 time, duration ago (2h) or revision")
	fl.StringVar(&f.until, "until", "", "only events at or before this: RFC 3339 time, duration ago (2h) or revision")
	fl.BoolVarP(&f.follow, "follow", "f", false, "after the history, keep printing new events as they are committed (until interrupted)")
}

// filter checks the flags and returns the filter they ask for.
func (f *eventFlags) filter(now time.Time) (*readside.EventFilter, error) {
	flt := readside.EventFilter{Stream: f.stream}
	var err error
	if err = checkStream(f.stream); err != nil {
		return nil, err
	}
	if flt.Types, err = checkTypes(f.types); err != nil {
		return nil, err
	}
	if f.node != "" {
		if err := validName("--node", f.node); err != nil {
			return nil, err
		}
		flt.Node = f.node
	}
	if f.pool != "" {
		if err := validName("--pool", f.pool); err != nil {
			return nil, err
		}
		flt.Pool = f.pool
	}
	flt.Container = strings.ToLower(f.container)
	if f.pod != "" {
		ns, name, ok := strings.Cut(f.pod, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, usagef("--pod %q: want NAMESPACE/NAME", f.pod)
		}
		flt.PodNamespace, flt.PodName = ns, name
	}
	if f.since != "" {
		p, err := parsePoint("--since", f.since, now)
		if err != nil {
			return nil, err
		}
		flt.Since = &p
	}
	if f.until != "" {
		if f.follow {
			return nil, usagef("--until and --follow do not go together")
		}
		p, err := parsePoint("--until", f.until, now)
		if err != nil {
			return nil, err
		}
		flt.Until = &p
	}
	return &flt, nil
}

// runEvents prints the matching history at one revision, then, with follow, watches from
// that revision (every stream's head as read) and prints what matches until ctx ends.
// --pod and --container use the attachment index for the history (readside.ReadEvents): the
// events it skips are ones flt.Show rejects without changing its state, so the filter
// follows from the heads read as after a full read.
func (a *app) runEvents(ctx context.Context, flt *readside.EventFilter, follow, wide bool) error {
	heads, rev, err := a.log.Streams(ctx, "", 0)
	if err != nil {
		return errors.Wrap(err, "list streams")
	}
	evs, err := readside.ReadEvents(ctx, a.log, a.index(), flt, heads, rev)
	if err != nil {
		return err
	}
	pr := a.newEventPrinter(wide, follow)
	if err := pr.print(evs, flt.Show); err != nil {
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
		if err := pr.print(b.Events, flt.Show); err != nil {
			return err
		}
		if err := pr.flush(); err != nil {
			return err
		}
	}
	return nil // interrupted: tail -f ends with success
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

// checkStream checks --stream: a stream name, or a prefix ending in "/".
func checkStream(f string) error {
	if f == "" || strings.HasSuffix(f, "/") {
		return nil
	}
	if err := events.Stream(f).Validate(); err != nil {
		return errors.Mark(errors.Wrap(err, "--stream"), ErrUsage)
	}
	return nil
}

// checkTypes checks and returns the event types of --type.
func checkTypes(ts []string) ([]events.Type, error) {
	var out []events.Type
	for _, t := range ts {
		t = strings.TrimSpace(t)
		if _, ok := events.NewPayload(events.Type(t)); !ok {
			names := make([]string, 0, len(events.AllTypes()))
			for _, k := range events.AllTypes() {
				names = append(names, string(k))
			}
			return nil, usagef("--type %q is not an event type (one of: %s)", t, strings.Join(names, ", "))
		}
		out = append(out, events.Type(t))
	}
	return out, nil
}

// summary is a one-line readable account of an event; cluster is the pools' state just
// before it (for block prefixes).
func summary(e *events.Event, cluster *projection.Cluster) string {
	_, streamName := e.Stream.Kind()
	if pool, _, ok := e.Stream.Block(); ok {
		streamName = pool
	}
	blockOf := func(pool string, index uint64) string {
		if p := cluster.Pools[pool]; p != nil {
			if ps, ok := p.Block(index); ok {
				return fmt.Sprintf("block %d of %s (%s)", index, pool, joinPrefixes(ps))
			}
		}
		return fmt.Sprintf("block %d of %s", index, pool)
	}
	block := func(index uint64) string {
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
		return fmt.Sprintf("pool %s += %s", p.Name, p.Subnet.String())
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
	case *events.ClusterLevelRaised:
		return fmt.Sprintf("cluster feature level raised to %d", p.Level)
	case *events.Snapshot:
		return fmt.Sprintf("snapshot of %s, state %s..", e.Stream, p.StateHash.String()[:12])
	case *events.PoolSplit:
		return fmt.Sprintf("pool %s: a stream per block from here on", p.Name)
	case *events.NodeBlockAdded:
		return fmt.Sprintf("%s taken", blockOf(p.Pool, p.Index))
	case *events.NodeBlockRemoved:
		return fmt.Sprintf("%s given up%s", blockOf(p.Pool, p.Index), because(p.Reason))
	case *events.AddressesReserved:
		after := ""
		if p.AfterRelease {
			after = " (held addresses: once released)"
		}
		return fmt.Sprintf("pool %s reserves %s%s%s", p.Pool, strings.Join(rangeStrings(p.Ranges), " "), after, because(p.Reason))
	case *events.AddressesUnreserved:
		return fmt.Sprintf("pool %s unreserves %s%s", p.Pool, strings.Join(rangeStrings(p.Ranges), " "), because(p.Reason))
	case *events.PoolNetworkBroadcastSet:
		if p.Skip {
			return fmt.Sprintf("pool %s skips its IPv4 network and broadcast addresses", p.Pool)
		}
		return fmt.Sprintf("pool %s hands out its IPv4 network and broadcast addresses", p.Pool)
	case *events.AddressClaimed:
		att := shortID(p.ContainerID) + "/" + p.IfName
		if pod := podName(p.PodNamespace, p.PodName); pod != "" {
			return fmt.Sprintf("%s claimed by %s (%s) on %s, %s", joinAddrs(p.Addrs), pod, att, p.Node, block(p.Block))
		}
		return fmt.Sprintf("%s claimed by %s on %s, %s", joinAddrs(p.Addrs), att, p.Node, block(p.Block))
	case *events.AddressClaimReleased:
		return fmt.Sprintf("%s claim of %s/%s on %s ended%s", joinAddrs(p.Addrs), shortID(p.ContainerID), p.IfName, p.Node, because(p.Reason))
	case *events.PoolNodeSelectorSet:
		if p.Selector == "" {
			return fmt.Sprintf("pool %s: every node may use it", p.Name)
		}
		return fmt.Sprintf("pool %s: only nodes matching %s", p.Name, p.Selector)
	case *events.PoolDisabled:
		return fmt.Sprintf("pool %s disabled%s", p.Name, because(p.Reason))
	case *events.PoolEnabled:
		return fmt.Sprintf("pool %s enabled", p.Name)
	case *events.NodeLabelsSet:
		return fmt.Sprintf("node %s labels: %s", p.Node, allocator.FormatLabels(p.Labels))
	}
	return string(e.Type())
}
