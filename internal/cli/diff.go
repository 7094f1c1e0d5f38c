package cli

import (
	"fmt"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/readside"
)

func (a *app) diffCommand() *cobra.Command {
	var archives []string
	c := &cobra.Command{
		Use:   "diff FROM TO [--archive FILE]...",
		Short: "What changed between two moments: pools, blocks, addresses",
		Long: `Print what changed between the state at FROM and the state at TO (see 'coilctl
state'): pools added, extended and removed, blocks assigned and released (with their
node), addresses assigned and released (with their holder).

FROM and TO are each an RFC 3339 time, a duration meaning that long ago (2h, 3d), or an
etcd revision (a plain integer). Compared are the two end states, not the way between:
an address assigned and released again between FROM and TO does not show (see
'coilctl events --since FROM --until TO' for every step). A block or address that
changed hands shows as released by the old holder and assigned to the new one.

A moment before a stream's oldest stored snapshot needs the events archived by 'coilctl
log archive': pass the archive files with --archive FILE (repeatable, any order), as for
'coilctl state'. The files are read once for both ends.`,
		Example: `  coilctl diff 2030-01-07T13:00:00Z 2030-01-07T15:00:00Z
  coilctl diff 1200 1300 -o json
  coilctl diff 1d 0s
  coilctl diff 2030-01-07T13:00:00Z 2030-03-01T00:00:00Z --archive 2030-01.jsonl`,
		Args: argsUsage(2, 2, "FROM and TO"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			bulkGC() // reads whole streams: see log.go
			now := a.env.Clock.Now()
			fp, err := parsePoint("FROM", args[0], now)
			if err != nil {
				return err
			}
			tp, err := parsePoint("TO", args[1], now)
			if err != nil {
				return err
			}
			if err = a.connect(); err != nil {
				return err
			}
			fp.Label, tp.Label = "state at FROM", "state at TO"
			sts, err := readside.StatesAt(cmd.Context(), a.log, []readside.Point{fp, tp}, archives)
			if err != nil {
				return stateErr(err)
			}
			return a.printDiff(fp, tp, readside.DiffStates(sts[0], sts[1]))
		}),
	}
	c.Flags().StringArrayVar(&archives, "archive", nil, "fold the archived events of this file first (from 'coilctl log archive'; repeat for several, any order)")
	return c
}

func (a *app) printDiff(fp, tp readside.Point, d *readside.Diff) error {
	if a.opts.output != "table" {
		return a.printValue(d)
	}
	w := a.env.Stdout
	end := func(p readside.Point, e readside.DiffEnd) string {
		if p.Rev > 0 {
			return p.String()
		}
		return fmt.Sprintf("%s (revision %d)", p, e.Revision)
	}
	fmt.Fprintf(w, "From %s to %s\n", end(fp, d.From), end(tp, d.To))
	if d.Empty() {
		_, err := fmt.Fprintln(w, "No change.")
		return errors.Wrap(err, "write output")
	}
	fmt.Fprintln(w)
	t := newTable(w, "CHANGE", "WHAT", "DETAIL")
	if d.FeatureLevel != nil {
		t.row("~ level", "cluster feature level", fmt.Sprintf("%d -> %d", d.FeatureLevel.From, d.FeatureLevel.To))
	}
	for _, p := range d.Pools.Removed {
		t.row("- pool", p.Name, strings.Join(p.Subnets, " "))
	}
	for _, p := range d.Pools.Added {
		t.row("+ pool", p.Name, strings.Join(p.Subnets, " "))
	}
	for _, p := range d.Pools.Extended {
		t.row("+ subnet", p.Name, strings.Join(p.Added, " "))
	}
	for _, o := range d.Options {
		t.row("~ option", o.Pool, fmt.Sprintf("%s %s -> %s", o.Option, o.From, o.To))
	}
	for _, r := range d.Reservations.Removed {
		t.row("- reserved", r.Pool+" "+r.Range, r.Reason)
	}
	for _, r := range d.Reservations.Added {
		t.row("+ reserved", r.Pool+" "+r.Range, r.Reason)
	}
	orAll := func(s string) string {
		if s == "" {
			return "(every node)"
		}
		return s
	}
	for _, c := range d.Pools.Changed {
		if c.Setting == "nodeSelector" {
			t.row("~ pool", c.Name, "node selector "+orAll(c.From)+" -> "+orAll(c.To))
		} else {
			t.row("~ pool", c.Name, c.From+" -> "+c.To)
		}
	}
	orNone := func(s string) string {
		if s == "" {
			return "(none)"
		}
		return s
	}
	for _, c := range d.NodeLabels {
		t.row("~ labels", "node "+c.Node, orNone(c.From)+" -> "+orNone(c.To))
	}
	for _, b := range d.Blocks.Released {
		t.row("- block", fmt.Sprintf("%s#%d %s", b.Pool, b.Index, strings.Join(b.Prefixes, ",")), "node "+b.Node)
	}
	for _, b := range d.Blocks.Assigned {
		t.row("+ block", fmt.Sprintf("%s#%d %s", b.Pool, b.Index, strings.Join(b.Prefixes, ",")), "node "+b.Node)
	}
	holder := func(c readside.AddressChange) string {
		s := "node " + c.Node + " " + shortID(c.ContainerID) + "/" + c.IfName
		if pod := podName(c.PodNamespace, c.PodName); pod != "" {
			s += " pod " + pod
		}
		return s
	}
	for _, c := range d.Addresses.Released {
		t.row("- address", joinAddrs(c.Addrs), holder(c))
	}
	for _, c := range d.Addresses.Assigned {
		t.row("+ address", joinAddrs(c.Addrs), holder(c))
	}
	claimant := func(c readside.PoolClaim) string {
		return holder(readside.AddressChange{Node: c.Node, ContainerID: c.ContainerID, IfName: c.IfName, PodNamespace: c.PodNamespace, PodName: c.PodName})
	}
	for _, c := range d.Claims.Removed {
		t.row("- claim", fmt.Sprintf("%s %s#%d", joinAddrs(c.Addrs), c.Pool, c.Block), claimant(c))
	}
	for _, c := range d.Claims.Added {
		t.row("+ claim", fmt.Sprintf("%s %s#%d", joinAddrs(c.Addrs), c.Pool, c.Block), claimant(c))
	}
	return t.flush()
}
