package cli

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/projection"
	"github.com/coil-net/coil/readside"
)

// poolChange is a pool that exists at one end of a diff and not at the other (or whose
// subnets changed).
type poolChange struct {
	Name    string   `json:"name"`
	Subnets []string `json:"subnets"`
	// Added lists the subnets added to a pool that existed at both ends.
	Added []string `json:"addedSubnets,omitempty"`
}

// blockChange is a block that changed hands between the two ends.
type blockChange struct {
	Pool     string   `json:"pool"`
	Index    uint32   `json:"index"`
	Prefixes []string `json:"prefixes"`
	Node     string   `json:"node"`
}

// addressChange is an attachment's addresses that were held at one end and not the other.
type addressChange struct {
	Addrs        []netip.Addr `json:"addrs"`
	Pool         string       `json:"pool"`
	Node         string       `json:"node"`
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	Since        time.Time    `json:"since"`
}

type diffEnd struct {
	Revision int64      `json:"revision"`
	Time     *time.Time `json:"time"`
}

// diffView is what changed from one state to another.
type diffView struct {
	From  diffEnd `json:"from"`
	To    diffEnd `json:"to"`
	Pools struct {
		Added    []poolChange `json:"added"`
		Extended []poolChange `json:"extended"`
		Removed  []poolChange `json:"removed"`
	} `json:"pools"`
	Blocks struct {
		Assigned []blockChange `json:"assigned"`
		Released []blockChange `json:"released"`
	} `json:"blocks"`
	Addresses struct {
		Assigned []addressChange `json:"assigned"`
		Released []addressChange `json:"released"`
	} `json:"addresses"`
}

func endOf(st *readside.StateAt) diffEnd {
	e := diffEnd{Revision: st.Rev}
	if !st.Time.IsZero() {
		t := st.Time
		e.Time = &t
	}
	return e
}

// diffStates compares two states: pools by name, blocks by pool+index+owner, addresses by
// node+container+interface+addresses.
func diffStates(from, to *readside.StateAt) *diffView {
	d := &diffView{From: endOf(from), To: endOf(to)}
	d.Pools.Added, d.Pools.Extended, d.Pools.Removed = []poolChange{}, []poolChange{}, []poolChange{}
	d.Blocks.Assigned, d.Blocks.Released = []blockChange{}, []blockChange{}
	d.Addresses.Assigned, d.Addresses.Released = []addressChange{}, []addressChange{}

	for _, name := range sortedKeys(to.Cluster.Pools) {
		p := to.Cluster.Pools[name]
		old, ok := from.Cluster.Pools[name]
		switch {
		case !ok:
			d.Pools.Added = append(d.Pools.Added, poolChange{Name: name, Subnets: subnetStrings(p.Subnets)})
		case len(p.Subnets) > len(old.Subnets):
			d.Pools.Extended = append(d.Pools.Extended, poolChange{Name: name, Subnets: subnetStrings(p.Subnets),
				Added: subnetStrings(p.Subnets[len(old.Subnets):])})
		}
	}
	for _, name := range sortedKeys(from.Cluster.Pools) {
		if _, ok := to.Cluster.Pools[name]; !ok {
			d.Pools.Removed = append(d.Pools.Removed, poolChange{Name: name, Subnets: subnetStrings(from.Cluster.Pools[name].Subnets)})
		}
	}

	blocksOf := func(st *readside.StateAt) map[projection.BlockRef]string {
		out := map[projection.BlockRef]string{}
		for pool, b := range st.Pools {
			for idx, o := range b.Owners {
				out[projection.BlockRef{Pool: pool, Index: idx}] = o.Node
			}
		}
		return out
	}
	fb, tb := blocksOf(from), blocksOf(to)
	block := func(st *readside.StateAt, ref projection.BlockRef, node string) blockChange {
		c := blockChange{Pool: ref.Pool, Index: ref.Index, Node: node, Prefixes: []string{}}
		if p := st.Cluster.Pools[ref.Pool]; p != nil {
			ps, _ := p.Block(ref.Index)
			for _, pf := range ps {
				c.Prefixes = append(c.Prefixes, pf.String())
			}
		}
		return c
	}
	for ref, node := range tb {
		if fb[ref] != node {
			d.Blocks.Assigned = append(d.Blocks.Assigned, block(to, ref, node))
		}
	}
	for ref, node := range fb {
		if tb[ref] != node {
			d.Blocks.Released = append(d.Blocks.Released, block(from, ref, node))
		}
	}
	sortBlocks := func(bs []blockChange) {
		sort.Slice(bs, func(i, j int) bool {
			if bs[i].Pool != bs[j].Pool {
				return bs[i].Pool < bs[j].Pool
			}
			return bs[i].Index < bs[j].Index
		})
	}
	sortBlocks(d.Blocks.Assigned)
	sortBlocks(d.Blocks.Released)

	type attKey struct {
		node string
		key  projection.AttachKey
	}
	attsOf := func(st *readside.StateAt) map[attKey]*projection.Assignment {
		out := map[attKey]*projection.Assignment{}
		for node, n := range st.Nodes {
			for k, asg := range n.Attached {
				out[attKey{node, k}] = asg
			}
		}
		return out
	}
	fa, ta := attsOf(from), attsOf(to)
	same := func(a, b *projection.Assignment) bool {
		return a != nil && b != nil && a.Seq == b.Seq && slices.Equal(a.Addrs, b.Addrs)
	}
	change := func(k attKey, asg *projection.Assignment) addressChange {
		return addressChange{Addrs: asg.Addrs, Pool: asg.Pool, Node: k.node, ContainerID: k.key.ContainerID, IfName: k.key.IfName,
			PodNamespace: asg.PodNamespace, PodName: asg.PodName, Since: asg.Since}
	}
	for k, asg := range ta {
		if !same(fa[k], asg) {
			d.Addresses.Assigned = append(d.Addresses.Assigned, change(k, asg))
		}
	}
	for k, asg := range fa {
		if !same(ta[k], asg) {
			d.Addresses.Released = append(d.Addresses.Released, change(k, asg))
		}
	}
	sortAddrs := func(as []addressChange) {
		sort.Slice(as, func(i, j int) bool {
			if as[i].Addrs[0] != as[j].Addrs[0] {
				return as[i].Addrs[0].Less(as[j].Addrs[0])
			}
			return as[i].Node < as[j].Node
		})
	}
	sortAddrs(d.Addresses.Assigned)
	sortAddrs(d.Addresses.Released)
	return d
}

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
			return a.printDiff(fp, tp, diffStates(sts[0], sts[1]))
		}),
	}
	c.Flags().StringArrayVar(&archives, "archive", nil, "fold the archived events of this file first (from 'coilctl log archive'; repeat for several, any order)")
	return c
}

func (a *app) printDiff(fp, tp readside.Point, d *diffView) error {
	if a.opts.output != "table" {
		return a.printValue(d)
	}
	w := a.env.Stdout
	end := func(p readside.Point, e diffEnd) string {
		if p.Rev > 0 {
			return p.String()
		}
		return fmt.Sprintf("%s (revision %d)", p, e.Revision)
	}
	fmt.Fprintf(w, "From %s to %s\n", end(fp, d.From), end(tp, d.To))
	n := len(d.Pools.Added) + len(d.Pools.Extended) + len(d.Pools.Removed) + len(d.Blocks.Assigned) +
		len(d.Blocks.Released) + len(d.Addresses.Assigned) + len(d.Addresses.Released)
	if n == 0 {
		_, err := fmt.Fprintln(w, "No change.")
		return errors.Wrap(err, "write output")
	}
	fmt.Fprintln(w)
	t := newTable(w, "CHANGE", "WHAT", "DETAIL")
	for _, p := range d.Pools.Removed {
		t.row("- pool", p.Name, strings.Join(p.Subnets, " "))
	}
	for _, p := range d.Pools.Added {
		t.row("+ pool", p.Name, strings.Join(p.Subnets, " "))
	}
	for _, p := range d.Pools.Extended {
		t.row("+ subnet", p.Name, strings.Join(p.Added, " "))
	}
	for _, b := range d.Blocks.Released {
		t.row("- block", fmt.Sprintf("%s#%d %s", b.Pool, b.Index, strings.Join(b.Prefixes, ",")), "node "+b.Node)
	}
	for _, b := range d.Blocks.Assigned {
		t.row("+ block", fmt.Sprintf("%s#%d %s", b.Pool, b.Index, strings.Join(b.Prefixes, ",")), "node "+b.Node)
	}
	holder := func(c addressChange) string {
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
	return t.flush()
}
