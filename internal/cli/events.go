package cli

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

func (a *app) eventsCommand() *cobra.Command {
	var streamFilter string
	var typeFilter []string
	c := &cobra.Command{
		Use:   "events",
		Short: "Print the event log in commit order across streams",
		Long: `Print the event log in commit (etcd revision) order across all streams, read at one
revision. Filter by stream (exact name, or a prefix ending in "/") and by type.
With -o json every event is one JSON object on its own line.`,
		Example: `  coilctl events
  coilctl events --stream pool/ --type BlockAssigned,BlockReleased
  coilctl events --stream node/worker-1 -o json | jq .payload`,
		Args: argsUsage(0, 0, "no arguments (filter with --stream and --type)"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			keepStream, err := streamMatcher(streamFilter)
			if err != nil {
				return err
			}
			keepType, err := typeMatcher(typeFilter)
			if err != nil {
				return err
			}
			if err := a.connect(); err != nil {
				return err
			}
			// The cluster stream is always read: summaries need the pools' geometry.
			evs, _, err := readEvents(cmd.Context(), a.log, "", func(s events.Stream) bool {
				return s == events.ClusterStream || keepStream(s)
			})
			if err != nil {
				return err
			}
			return a.printEvents(evs, func(e *events.Event) bool { return keepStream(e.Stream) && keepType(e.Type()) })
		}),
	}
	c.Flags().StringVar(&streamFilter, "stream", "", `only this stream ("cluster", "pool/NAME", "node/NAME"), or streams under a prefix ending in "/" ("pool/", "node/")`)
	c.Flags().StringSliceVar(&typeFilter, "type", nil, "only these event types (repeat the flag or separate with commas), e.g. AddressAssigned,AddressReleased")
	return c
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

// printEvents prints the events show accepts; every cluster event (shown or not) is folded
// to know the pools' geometry at that point of the log.
func (a *app) printEvents(evs []*events.Event, show func(*events.Event) bool) error {
	cluster := projection.NewCluster()
	var t *table
	all := []*events.Event{}
	if a.opts.output == "table" {
		t = newTable(a.env.Stdout, "REV", "TIME", "STREAM", "SEQ", "TYPE", "ACTOR", "SUMMARY")
	}
	for _, e := range evs {
		if show(e) {
			switch a.opts.output {
			case "table":
				t.row(fmt.Sprint(e.Revision), fmtTime(e.Time), string(e.Stream), fmt.Sprint(e.Seq), string(e.Type()), e.Actor, summary(e, cluster))
			case "json":
				b, err := json.Marshal(e) // events' own JSON form (events/json.go)
				if err != nil {
					return errors.Wrapf(err, "render %s #%d", e.Stream, e.Seq)
				}
				if _, err := fmt.Fprintf(a.env.Stdout, "%s\n", b); err != nil {
					return errors.Wrap(err, "write output")
				}
			default:
				all = append(all, e)
			}
		}
		if e.Stream == events.ClusterStream {
			if err := cluster.Apply(e); err != nil {
				return errors.Wrapf(err, "fold cluster #%d", e.Seq)
			}
		}
	}
	switch a.opts.output {
	case "table":
		return t.flush()
	case "yaml":
		return a.printValue(all)
	}
	return nil
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
