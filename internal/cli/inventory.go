package cli

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/safetext"
	"github.com/coil-net/coil/projection"
)

// filters are --node and --pool of the listings.
type filters struct{ node, pool string }

func (f *filters) add(c *cobra.Command) {
	c.Flags().StringVar(&f.node, "node", "", "only this node")
	c.Flags().StringVar(&f.pool, "pool", "", "only this pool")
}

// check validates the filters against the state: a named pool or node must exist.
func (f *filters) check(st *snapshot) error {
	if f.pool != "" {
		if _, ok := st.Cluster.Pools[f.pool]; !ok {
			return errors.Wrapf(ErrNotFound, "pool %q not found", f.pool)
		}
	}
	if f.node != "" && !st.knowsNode(f.node) {
		return errors.Wrapf(ErrNotFound, "node %q not found (it never registered and holds no block)", f.node)
	}
	return nil
}

func (f *filters) validate() error {
	if f.pool != "" {
		if err := validName("--pool", f.pool); err != nil {
			return err
		}
	}
	if f.node != "" {
		if err := validName("--node", f.node); err != nil {
			return err
		}
	}
	return nil
}

// load connects and replays the log.
// loadFiltered validates the filters, loads the state and checks that the filters name
// what exists (exit 3 otherwise).
func (a *app) loadFiltered(ctx context.Context, f *filters) (*snapshot, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	st, err := a.load(ctx)
	if err != nil {
		return nil, err
	}
	if err := f.check(st); err != nil {
		return nil, err
	}
	return st, nil
}

func (a *app) load(ctx context.Context) (*snapshot, error) {
	if err := a.connect(); err != nil {
		return nil, err
	}
	return loadState(ctx, a.log)
}

// ---- addresses ----

type addressView struct {
	Address      netip.Addr   `json:"address"`
	Addrs        []netip.Addr `json:"addrs"` // all addresses of the attachment (one per family)
	Pool         string       `json:"pool"`
	BlockIndex   uint64       `json:"blockIndex"`
	Block        string       `json:"block"`
	Node         string       `json:"node"`
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
	Since        time.Time    `json:"since"`
}

// addresses lists every held address (one entry per address, both families of a
// dual-stack attachment), sorted by address.
func (s *snapshot) addresses(f filters) []addressView {
	out := []addressView{}
	for name, n := range s.Nodes {
		if f.node != "" && name != f.node {
			continue
		}
		for key, asg := range n.Attached {
			if f.pool != "" && asg.Pool != f.pool {
				continue
			}
			var prefixes []netip.Prefix
			if p := s.Cluster.Pools[asg.Pool]; p != nil {
				prefixes, _ = p.Block(asg.Block)
			}
			for _, addr := range asg.Addrs {
				v := addressView{
					Address: addr, Addrs: asg.Addrs, Pool: asg.Pool, BlockIndex: asg.Block, Node: name,
					ContainerID: key.ContainerID, IfName: key.IfName,
					PodNamespace: asg.PodNamespace, PodName: asg.PodName, PodUID: asg.PodUID, Since: asg.Since,
				}
				v.Block = fmt.Sprint(asg.Block)
				for _, pf := range prefixes {
					if pf.Contains(addr) {
						v.Block = pf.String()
					}
				}
				out = append(out, v)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Address.Less(out[j].Address) })
	return out
}

func (a *app) addressCommand() *cobra.Command {
	var f filters
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the addresses in use and who holds them",
		Example: "  coilctl address list --node worker-1",
		Args:    argsUsage(0, 0, "no arguments (filter with --node and --pool)"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			st, err := a.loadFiltered(cmd.Context(), &f)
			if err != nil {
				return err
			}
			views := st.addresses(f)
			if a.opts.output != "table" {
				return a.printValue(views)
			}
			t := newTable(a.env.Stdout, "ADDRESS", "POOL", "BLOCK", "NODE", "CONTAINER", "IF", "POD", "SINCE")
			for _, v := range views {
				t.row(v.Address.String(), v.Pool, v.Block, v.Node, shortID(safetext.Clean(v.ContainerID)), v.IfName,
					podName(v.PodNamespace, v.PodName), fmtTime(v.Since))
			}
			return t.flush()
		}),
	}
	f.add(list)
	show := &cobra.Command{
		Use:     "show ADDRESS",
		Short:   "Show who holds an address (exit 3 if it is free)",
		Example: "  coilctl address show 10.64.0.5",
		Args:    argsUsage(1, 1, "one ADDRESS"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			addr, err := parseAddrArg(args[0])
			if err != nil {
				return err
			}
			st, err := a.load(cmd.Context())
			if err != nil {
				return err
			}
			for _, v := range st.addresses(filters{}) {
				if v.Address != addr {
					continue
				}
				if a.opts.output != "table" {
					return a.printValue(v)
				}
				w := a.env.Stdout
				fmt.Fprintf(w, "Address:     %s\n", v.Address)
				if len(v.Addrs) > 1 {
					fmt.Fprintf(w, "Addresses:   %s\n", joinAddrs(v.Addrs))
				}
				fmt.Fprintf(w, "Pool:        %s\n", safetext.Clean(v.Pool))
				fmt.Fprintf(w, "Block:       %s (index %d)\n", v.Block, v.BlockIndex)
				fmt.Fprintf(w, "Node:        %s\n", safetext.Clean(v.Node))
				fmt.Fprintf(w, "Container:   %s\n", v.ContainerID)
				fmt.Fprintf(w, "Interface:   %s\n", safetext.Clean(v.IfName))
				fmt.Fprintf(w, "Pod:         %s\n", safetext.Clean(orDash(podName(v.PodNamespace, v.PodName))))
				if v.PodUID != "" {
					fmt.Fprintf(w, "Pod UID:     %s\n", safetext.Clean(v.PodUID))
				}
				_, err := fmt.Fprintf(w, "Since:       %s\n", fmtTime(v.Since))
				return errors.Wrap(err, "write output")
			}
			return errors.Wrapf(ErrNotFound, "address %s is free (%s)", addr, st.whereIs(addr))
		}),
	}
	return a.group("address", "List addresses in use, show who holds one, release one whose pod is gone", list, show, a.addressReleaseCommand())
}

// whereIs says which pool and block an address belongs to, and whether a node owns it.
func (s *snapshot) whereIs(addr netip.Addr) string {
	for _, name := range slices.Sorted(maps.Keys(s.Cluster.Pools)) {
		p := s.Cluster.Pools[name]
		idx, _, ok := p.Locate(addr)
		if !ok {
			continue
		}
		if o, owned := s.Owner(name, idx); owned {
			return fmt.Sprintf("pool %s, block %d, owned by node %s", name, idx, o.Node)
		}
		return fmt.Sprintf("pool %s, block %d, not assigned to any node", name, idx)
	}
	return "in no pool"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ---- blocks ----

type blockView struct {
	Pool           string    `json:"pool"`
	Index          uint64    `json:"index"`
	Prefixes       []string  `json:"prefixes"`
	Node           string    `json:"node"`
	Since          time.Time `json:"since"`
	AddressesInUse int       `json:"addressesInUse"`
}

func (s *snapshot) blocks(f filters) []blockView {
	out := []blockView{}
	owners := s.AllOwners() // pool streams and block streams
	for _, pool := range slices.Sorted(maps.Keys(owners)) {
		if f.pool != "" && pool != f.pool {
			continue
		}
		use := s.addressesInUse(pool)
		for idx, o := range owners[pool] {
			if f.node != "" && o.Node != f.node {
				continue
			}
			v := blockView{Pool: pool, Index: idx, Node: o.Node, Since: o.Since, AddressesInUse: use[idx], Prefixes: []string{}}
			if p := s.Cluster.Pools[pool]; p != nil {
				ps, _ := p.Block(idx)
				for _, pf := range ps {
					v.Prefixes = append(v.Prefixes, pf.String())
				}
			}
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Pool != out[j].Pool {
			return out[i].Pool < out[j].Pool
		}
		return out[i].Index < out[j].Index
	})
	return out
}

func (a *app) blockCommand() *cobra.Command {
	var f filters
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the blocks assigned to nodes",
		Example: "  coilctl block list --pool default",
		Args:    argsUsage(0, 0, "no arguments (filter with --node and --pool)"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			st, err := a.loadFiltered(cmd.Context(), &f)
			if err != nil {
				return err
			}
			views := st.blocks(f)
			if a.opts.output != "table" {
				return a.printValue(views)
			}
			t := newTable(a.env.Stdout, "POOL", "INDEX", "PREFIXES", "NODE", "SINCE", "ADDRESSES IN USE")
			for _, v := range views {
				t.row(v.Pool, fmt.Sprint(v.Index), strings.Join(v.Prefixes, ","), v.Node, fmtTime(v.Since), fmt.Sprint(v.AddressesInUse))
			}
			return t.flush()
		}),
	}
	f.add(list)
	return a.group("block", "List the blocks nodes hold", list)
}

// ---- nodes ----

type nodeView struct {
	Node       string    `json:"node"`
	Registered time.Time `json:"registered,omitzero"`
	Lease      int64     `json:"lease"`
	Alive      bool      `json:"alive"`
	Blocks     int       `json:"blocks"`
	Addresses  int       `json:"addresses"`
	Retired    bool      `json:"retired"`
	// Labels are the node's labels as its coild last recorded them (NodeLabelsSet):
	// what pools' node selectors are matched against.
	Labels map[string]string `json:"labels,omitempty"`
}

// aliveNodes lists the nodes whose liveness key exists.
func (a *app) aliveNodes(ctx context.Context) (map[string]bool, error) {
	ctx, cancel := a.requestCtx(ctx)
	defer cancel()
	live, _, err := a.etcd.LiveNodes(ctx, false)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, n := range live {
		out[n.Node] = true
	}
	return out, nil
}

func (s *snapshot) nodes(alive map[string]bool) []nodeView {
	names := map[string]bool{}
	for _, n := range s.nodeNames() {
		names[n] = true
	}
	for n := range alive {
		names[n] = true
	}
	out := []nodeView{}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		v := nodeView{Node: name, Alive: alive[name]}
		if n := s.Nodes[name]; n != nil {
			v.Registered, v.Lease, v.Retired, v.Addresses, v.Labels = n.Registered, n.Lease, n.Retired, len(n.Attached), n.Labels
		}
		for _, owners := range s.AllOwners() {
			for _, o := range owners {
				if o.Node == name {
					v.Blocks++
				}
			}
		}
		out = append(out, v)
	}
	return out
}

func (a *app) nodeCommand() *cobra.Command {
	list := &cobra.Command{
		Use:   "list",
		Short: "List nodes: registration, lease, liveness, blocks, addresses and recorded labels",
		Args:  argsUsage(0, 0, "no arguments"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			st, err := a.load(cmd.Context())
			if err != nil {
				return err
			}
			alive, err := a.aliveNodes(cmd.Context())
			if err != nil {
				return err
			}
			views := st.nodes(alive)
			if a.opts.output != "table" {
				return a.printValue(views)
			}
			t := newTable(a.env.Stdout, "NODE", "REGISTERED", "LEASE", "ALIVE", "BLOCKS", "ADDRESSES", "RETIRED", "LABELS")
			for _, v := range views {
				lease := "-"
				if v.Lease != 0 {
					lease = fmt.Sprintf("%x", v.Lease)
				}
				t.row(v.Node, fmtTime(v.Registered), lease, yesNo(v.Alive), fmt.Sprint(v.Blocks), fmt.Sprint(v.Addresses), yesNo(v.Retired),
					projection.LabelsString(v.Labels))
			}
			return t.flush()
		}),
	}
	var reason string
	var yes bool
	reclaim := &cobra.Command{
		Use:   "reclaim NODE",
		Short: "Take a dead node's addresses and blocks back and retire it (refused while its lease lives; asks for confirmation)",
		Long: `Release every address of NODE, retire it and reclaim its blocks in every pool. Every
write is conditioned on NODE's liveness key being gone, so a node whose coild still
holds its etcd lease is never reclaimed (exit 4). Reclaiming twice is harmless.
On a terminal coilctl shows what it will release and asks for confirmation; in scripts
pass --yes (without a terminal and without --yes: exit 2, nothing changed).`,
		Example: `  coilctl node reclaim worker-3 --reason "machine decommissioned"
  coilctl node reclaim worker-3 --yes`,
		Args: argsUsage(1, 1, "one NODE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validName("node", name); err != nil {
				return err
			}
			if err := a.needConfirm(cmd, yes, fmt.Sprintf("reclaim node %q (release its addresses and blocks)", name)); err != nil {
				return err
			}
			st, err := a.load(cmd.Context())
			if err != nil {
				return err
			}
			if !st.knowsNode(name) {
				return errors.Wrapf(ErrNotFound, "node %q not found (it never registered and holds no block)", name)
			}
			aliveKey := events.AliveKey(a.opts.etcd.Prefix, name)
			// Refuse a live node before asking (Reclaim refuses it again, atomically).
			alive, err := a.aliveNodes(cmd.Context())
			if err != nil {
				return err
			}
			if alive[name] {
				return errors.Wrapf(allocator.ErrNodeAlive, "node %q still holds its lease (%s); reclaim only a node whose coild is gone", name, aliveKey)
			}
			if err = a.confirm(cmd.Context(), yes, st.reclaimPlan(name), fmt.Sprintf("node %q was not reclaimed", name)); err != nil {
				return err
			}
			res, err := a.admin().Reclaim(cmd.Context(), name, aliveKey, reason)
			if err != nil {
				return err
			}
			return a.printReclaim(res)
		}),
	}
	reclaim.Flags().StringVar(&reason, "reason", "reclaimed by operator", "why, recorded in the events")
	yesFlag(reclaim, &yes)
	return a.group("node", "List nodes, reclaim a dead node", list, reclaim)
}

// reclaimPlan says what reclaiming node will do, for the confirmation.
func (s *snapshot) reclaimPlan(node string) string {
	addrs := 0
	if n := s.Nodes[node]; n != nil {
		addrs = len(n.Attached)
	}
	blocks := 0
	var per []string
	all := s.AllOwners()
	for _, p := range slices.Sorted(maps.Keys(all)) {
		k := 0
		for _, o := range all[p] {
			if o.Node == node {
				k++
			}
		}
		if k > 0 {
			blocks += k
			per = append(per, fmt.Sprintf("%s: %d", p, k))
		}
	}
	plan := fmt.Sprintf("Reclaim node %q: release its %d addresses, take back its %d blocks", node, addrs, blocks)
	if len(per) > 0 {
		plan += " (" + strings.Join(per, ", ") + ")"
	}
	return plan + " and retire it. Its pods lose their addresses: do this only for a node that is gone."
}

func (a *app) printReclaim(res *allocator.ReclaimResult) error {
	blocks := 0
	var per []string
	for _, p := range slices.Sorted(maps.Keys(res.Reclaimed)) {
		blocks += res.Reclaimed[p]
		per = append(per, fmt.Sprintf("%s: %d", p, res.Reclaimed[p]))
	}
	if a.opts.output != "table" {
		return a.printValue(map[string]any{
			"node": res.Node, "addressesReleased": res.Released, "blocksReclaimed": res.Reclaimed,
		})
	}
	msg := fmt.Sprintf("node %q reclaimed: %d addresses released, %d blocks reclaimed", res.Node, res.Released, blocks)
	if len(per) > 0 {
		msg += " (" + strings.Join(per, ", ") + ")"
	}
	_, err := fmt.Fprintln(a.env.Stdout, msg)
	return errors.Wrap(err, "write output")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
