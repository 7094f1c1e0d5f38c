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
	"github.com/coil-net/coil/projection"
)

func (a *app) poolCommand() *cobra.Command {
	return a.group("pool", "Create, list, show and delete address pools",
		a.poolCreateCommand(), a.poolAddSubnetCommand(), a.poolListCommand(), a.poolShowCommand(), a.poolDeleteCommand(),
		a.poolSplitCommand(),
		a.poolReserveCommand(), a.poolUnreserveCommand(), a.poolSetCommand(),
		// Node selectors and pool lifecycle (issue 14).
		a.poolSetNodeSelectorCommand(), a.poolDisableCommand(), a.poolEnableCommand())
}

// argsUsage checks the argument count with a message naming the arguments.
func argsUsage(min, max int, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return usagef("%s takes %s (got %d arguments)", cmd.CommandPath(), want, len(args))
		}
		return nil
	}
}

func validName(kind, name string) error {
	if err := events.ValidName(name); err != nil {
		return errors.Mark(errors.Wrapf(err, "%s", kind), ErrUsage)
	}
	return nil
}

// connectForPool checks a pool NAME argument, then connects: a bad name is a usage
// error before etcd is dialled.
func (a *app) connectForPool(name string) error {
	if err := validName("pool", name); err != nil {
		return err
	}
	return a.connect()
}

// Pool layouts (--layout): where a pool records its blocks' owners.
const (
	layoutBlockStreams = "block-streams"
	layoutPoolStream   = "pool-stream"
	layoutAuto         = "auto" // block streams if the cluster's level allows, else the pool stream
)

func (a *app) poolCreateCommand() *cobra.Command {
	var bits int
	var layout, selector string
	var reserve []string
	var reserveReason string
	var skipNB bool
	c := &cobra.Command{
		Use:   "create NAME SUBNET...",
		Short: "Create a pool from one or more subnets",
		Long: `Create a pool from one or more subnets. A SUBNET is an IPv4 network (10.0.0.0/16),
an IPv6 network (fd00::/112) or a dual-stack pair (10.0.0.0/16,fd00::/112); all
subnets of a pool are of one kind, and no subnet may overlap any other pool's.

--layout block-streams gives each block an ownership stream of its own: nodes never
wait for each other unless they want the same block. --layout pool-stream keeps all
block owners in the pool's one stream, as coil versions before block streams did: nodes
taking blocks at once wait for each other (hundreds of nodes booting together take
minutes). A coild without block streams stops at a block-streams pool, so they need
cluster feature level 1: coilctl raises it when every live coild reads it, and with
--layout block-streams refuses (exit 4, naming the coilds that hold it back) otherwise
(docs/operations.md, "Upgrading"). The default, --layout auto, is block-streams when
the level is 1 or can be raised, and pool-stream with a warning while an older coild
holds it back; move such a pool later with 'coilctl pool split'.

A new pool does not hand out the network and broadcast address (the first and the last)
of its IPv4 subnets (--skip-network-broadcast, default true; change it with 'coilctl
pool set'). That takes cluster feature level 1: while a coild of an older release runs,
the pool is made without the option (it hands them out) and coilctl says so.
--reserve RANGE (repeatable) reserves addresses from the start (see 'coilctl pool
reserve').
--node-selector restricts the pool to the nodes whose labels match it (Kubernetes
label-selector syntax: zone=a,rack in (r1,r2),!gpu); other nodes take no block of it,
and an ADD there that chooses it is refused. It needs cluster feature level 1, like
block streams. Change it later with 'coilctl pool set-node-selector'.`,
		Example: `  coilctl pool create default 10.64.0.0/16
  coilctl pool create dual 10.65.0.0/16,fd00:65::/112 --block-size-bits 6
  coilctl pool create edge 10.66.0.0/24 --reserve 10.66.0.1 --reserve 10.66.0.240/28 --reserve-reason "router and VIPs"
  coilctl pool create zone-a 10.67.0.0/16 --node-selector 'topology.kubernetes.io/zone=a'`,
		Args: argsUsage(2, -1, "NAME and at least one SUBNET"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validName("pool", name); err != nil {
				return err
			}
			if bits < 0 || bits > allocator.MaxBlockSizeBits {
				return usagef("--block-size-bits %d is out of range: must be between 0 and %d", bits, allocator.MaxBlockSizeBits)
			}
			p := &events.PoolCreated{Name: name, BlockSizeBits: uint8(bits)}
			for _, arg := range args[1:] {
				s, err := allocator.ParseSubnet(arg)
				if err != nil {
					return err
				}
				p.Subnets = append(p.Subnets, s)
			}
			rs, err := parseRanges(reserve)
			if err != nil {
				return err
			}
			if len(rs) > 0 {
				// Checked against the pool's definition before anything is written.
				np := &projection.Pool{Name: name, BlockSizeBits: p.BlockSizeBits, Subnets: p.Subnets}
				if err := allocator.CheckRanges(np, rs); err != nil {
					return errors.Mark(err, ErrUsage)
				}
			}
			var opts []allocator.PoolOption
			switch {
			case !cmd.Flags().Changed("skip-network-broadcast"):
				opts = append(opts, allocator.SkipNetworkBroadcastIfLevel())
			default:
				opts = append(opts, allocator.SkipNetworkBroadcast(skipNB))
			}
			if len(rs) > 0 {
				why := reserveReason
				if strings.TrimSpace(why) == "" {
					why = "reserved when the pool was created"
				}
				opts = append(opts, allocator.ReserveRanges(rs, why))
			}
			if cmd.Flags().Changed("node-selector") {
				canon, err := allocator.ParseNodeSelector(selector)
				if err != nil {
					return err
				}
				if canon != "" {
					opts = append(opts, allocator.WithNodeSelector(canon))
				}
			}
			switch layout {
			case layoutAuto:
				opts = append(opts, allocator.BlockStreamsIfLevel())
			case layoutBlockStreams:
				opts = append(opts, allocator.BlockStreams())
			case layoutPoolStream:
			default:
				return usagef("--layout %q: want %s, %s or %s", layout, layoutAuto, layoutBlockStreams, layoutPoolStream)
			}
			if err := a.connect(); err != nil {
				return err
			}
			if err := a.admin().CreatePool(cmd.Context(), p, opts...); err != nil {
				return poolErr(name, err)
			}
			return a.printPoolResult(cmd, name, "created")
		}),
	}
	c.Flags().StringArrayVar(&reserve, "reserve", nil, "reserve RANGE (an address, a CIDR prefix or FIRST-LAST) from the start; repeatable")
	c.Flags().StringVar(&reserveReason, "reserve-reason", "", "why the --reserve ranges are reserved (recorded)")
	c.Flags().BoolVar(&skipNB, "skip-network-broadcast", true, "do not hand out the network and broadcast address of the pool's IPv4 subnets (needs cluster feature level 1; without it the default falls back to handing them out)")
	c.Flags().IntVar(&bits, "block-size-bits", allocator.DefaultBlockSizeBits,
		fmt.Sprintf("block size as a power of two: a block holds 2^N addresses (0-%d; 5 = 32 addresses, a /27)", allocator.MaxBlockSizeBits))
	c.Flags().StringVar(&selector, "node-selector", "", "only nodes whose labels match this Kubernetes label selector take blocks of the pool (zone=a,rack in (r1,r2)); empty: every node")
	c.Flags().StringVar(&layout, "layout", layoutAuto, "where block owners are recorded: "+layoutBlockStreams+" (a stream per block; needs cluster feature level 1, raised when every live coild reads it), "+
		layoutPoolStream+" (one stream for the pool, as before block streams) or "+layoutAuto+" (block streams if the level allows, else the pool stream)")
	return c
}

func (a *app) poolSplitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "split NAME",
		Short: "Give each block of a pool its own ownership stream (from pool-stream to block-streams)",
		Long: `Move a pool made with --layout pool-stream (or by a coil version before block
streams) to block streams: from now on its blocks are taken in streams of their own, so
nodes stop racing for the pool stream. Blocks owned now stay recorded in the pool
stream until their nodes release them. Every coild must run a version that knows block
streams first: an older one stops at the pool's new events (it exits rather than hand
out addresses from a log it cannot read). There is no way back.`,
		Example: `  coilctl pool split default`,
		Args:    argsUsage(1, 1, "NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := a.connectForPool(name); err != nil {
				return err
			}
			if err := a.admin().SplitPool(cmd.Context(), name); err != nil {
				if errors.Is(err, allocator.ErrPoolSplit) {
					return errors.Mark(errors.Newf("pool %q already has block streams", name), ErrRefused)
				}
				return poolErr(name, err)
			}
			return a.printPoolResult(cmd, name, "split")
		}),
	}
}

func (a *app) poolAddSubnetCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "add-subnet NAME SUBNET",
		Short:   "Add a subnet to a pool (its blocks are numbered after the existing ones)",
		Example: `  coilctl pool add-subnet default 10.66.0.0/16`,
		Args:    argsUsage(2, 2, "NAME and one SUBNET"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validName("pool", name); err != nil {
				return err
			}
			s, err := allocator.ParseSubnet(args[1])
			if err != nil {
				return err
			}
			if err := a.connect(); err != nil {
				return err
			}
			if err := a.admin().AddSubnet(cmd.Context(), name, s); err != nil {
				return poolErr(name, err)
			}
			return a.printPoolResult(cmd, name, "extended")
		}),
	}
}

// poolErr words the allocator's errors for the command line. Its messages already name
// the pool; a missing pool is said plainly.
func poolErr(name string, err error) error {
	if errors.Is(err, allocator.ErrPoolNotFound) {
		return errors.Mark(errors.Newf("pool %q not found", name), allocator.ErrPoolNotFound)
	}
	return err
}

// printPoolResult reports a pool after a change: a sentence in table mode, the pool's
// view in json and yaml.
func (a *app) printPoolResult(cmd *cobra.Command, name, what string) error {
	st, err := loadState(cmd.Context(), a.log)
	if err != nil {
		return err
	}
	p, ok := st.Cluster.Pools[name]
	if !ok {
		return errors.Wrapf(ErrNotFound, "pool %q vanished after the change (deleted meanwhile?)", name)
	}
	v := st.poolView(p, false)
	if what == "created" && v.Layout == layoutPoolStream && !cmd.Flags().Changed("layout") {
		fmt.Fprintf(a.env.Stderr, "coilctl: warning: pool %q records its block owners in one stream (layout pool-stream): "+
			"block streams need cluster feature level 1, which a coild of an older release holds back; once every coild is upgraded: "+
			"coilctl pool split %s\n", name, name)
	}
	if what == "created" && len(p.Subnets) > 0 && p.Subnets[0].IPv4.IsValid() && !p.SkipNetworkBroadcast &&
		!cmd.Flags().Changed("skip-network-broadcast") {
		fmt.Fprintf(a.env.Stderr, "coilctl: warning: pool %q hands out the network and broadcast addresses of its IPv4 subnets: "+
			"skipping them needs cluster feature level 1, which a coild of an older release holds back; once every coild is upgraded: "+
			"coilctl pool set %s --skip-network-broadcast=true\n", name, name)
	}
	if a.opts.output != "table" {
		return a.printValue(v)
	}
	_, err = fmt.Fprintf(a.env.Stdout, "pool %q %s: %s (%d blocks of %d addresses, %s)\n%s",
		name, what, strings.Join(v.Subnets, " "), v.Blocks.Total, p.BlockSize(), blockLens(p), capNote(p))
	return errors.Wrap(err, "write output")
}

// capNote is a line saying which subnets of p hold more blocks than Coil numbers
// (projection.MaxBlocksPerSubnet), or "" when none does.
func capNote(p *projection.Pool) string {
	var big []string
	for _, s := range p.Subnets {
		pf := s.IPv4
		if !pf.IsValid() {
			pf = s.IPv6
		}
		if host := pf.Addr().BitLen() - pf.Bits() - int(p.BlockSizeBits); host > projection.MaxBlockIndexBits {
			big = append(big, fmt.Sprintf("%s holds 2^%d", s, host))
		}
	}
	if len(big) == 0 {
		return ""
	}
	return fmt.Sprintf("Note: Coil numbers the first 2^%d blocks of a subnet (%s); the addresses beyond them are never handed out.\n",
		projection.MaxBlockIndexBits, strings.Join(big, ", "))
}

type blockCounts struct {
	Used  uint64 `json:"used"`
	Free  uint64 `json:"free"`
	Total uint64 `json:"total"`
}

type poolNodeView struct {
	Node           string   `json:"node"`
	Blocks         int      `json:"blocks"`
	AddressesInUse int      `json:"addressesInUse"`
	Prefixes       []string `json:"prefixes"`
}

type poolView struct {
	Name           string         `json:"name"`
	NodeSelector   string         `json:"nodeSelector,omitempty"`
	Disabled       bool           `json:"disabled,omitempty"`
	DisabledReason string         `json:"disabledReason,omitempty"`
	Subnets        []string       `json:"subnets"`
	BlockSizeBits  uint8          `json:"blockSizeBits"`
	BlockSize      string         `json:"blockSize"`
	Blocks         blockCounts    `json:"blocks"`
	AddressesInUse int            `json:"addressesInUse"`
	Created        time.Time      `json:"created"`
	Layout         string         `json:"layout"`
	Nodes          []poolNodeView `json:"nodes,omitempty"`
	// SkipNetworkBroadcast: the pool does not hand out its IPv4 subnets' network and
	// broadcast addresses; Reservations are its reserved ranges.
	SkipNetworkBroadcast bool              `json:"skipNetworkBroadcast"`
	Reservations         []reservationView `json:"reservations"`
}

// blockSize describes a block: "32 (/27)", "32 (/27,/123)" for dual stack.
func blockSize(p *projection.Pool) string {
	return fmt.Sprintf("%d (%s)", p.BlockSize(), blockLens(p))
}

// blockLens is a block's prefix length per family: "/27", "/27,/123" for dual stack.
func blockLens(p *projection.Pool) string {
	var lens []string
	if len(p.Subnets) > 0 {
		s := p.Subnets[0]
		if s.IPv4.IsValid() {
			lens = append(lens, fmt.Sprintf("/%d", 32-int(p.BlockSizeBits)))
		}
		if s.IPv6.IsValid() {
			lens = append(lens, fmt.Sprintf("/%d", 128-int(p.BlockSizeBits)))
		}
	}
	return strings.Join(lens, ",")
}

func (s *snapshot) poolView(p *projection.Pool, withNodes bool) *poolView {
	v := &poolView{
		Name: p.Name, Subnets: subnetStrings(p.Subnets), BlockSizeBits: p.BlockSizeBits,
		BlockSize: blockSize(p), Created: p.Created, Layout: layoutPoolStream,
		NodeSelector: p.NodeSelector, Disabled: p.Disabled, DisabledReason: p.DisabledReason,
	}
	if p.Split {
		v.Layout = layoutBlockStreams
	}
	v.SkipNetworkBroadcast = p.SkipNetworkBroadcast
	v.Reservations = s.reservationViews(p)
	v.Blocks.Total = p.NumBlocks()
	use := s.addressesInUse(p.Name)
	for _, n := range use {
		v.AddressesInUse += n
	}
	owners := s.PoolOwners(p.Name) // pool stream and block streams
	v.Blocks.Used = uint64(len(owners))
	if v.Blocks.Total > v.Blocks.Used {
		v.Blocks.Free = v.Blocks.Total - v.Blocks.Used
	}
	if !withNodes || len(owners) == 0 {
		return v
	}
	// Addresses held in blocks no node owns any more cannot happen (a block is released
	// only empty); every address in use is counted under its block's owner below.
	byNode := map[string]*poolNodeView{}
	idx := make([]uint64, 0, len(owners))
	for i := range owners {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(i, j int) bool { return idx[i] < idx[j] })
	for _, i := range idx {
		o := owners[i]
		nv := byNode[o.Node]
		if nv == nil {
			nv = &poolNodeView{Node: o.Node, Prefixes: []string{}}
			byNode[o.Node] = nv
		}
		nv.Blocks++
		nv.AddressesInUse += use[i]
		ps, _ := p.Block(i)
		for _, pf := range ps {
			nv.Prefixes = append(nv.Prefixes, pf.String())
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byNode)) {
		v.Nodes = append(v.Nodes, *byNode[name])
	}
	return v
}

// remaining says what a disabled pool still holds: "3 addresses on n1 (2), n2 (1)", or
// that it is empty and may be deleted.
func remaining(v *poolView) string {
	if v.AddressesInUse == 0 {
		if v.Blocks.Used > 0 {
			return fmt.Sprintf("no address; %d empty blocks not yet given back by their nodes (at once for a disabled pool, on each node's next reconcile pass)", v.Blocks.Used)
		}
		return "nothing: the pool may be deleted (coilctl pool delete " + v.Name + ")"
	}
	var parts []string
	for _, n := range v.Nodes {
		if n.AddressesInUse > 0 {
			parts = append(parts, fmt.Sprintf("%s (%d)", n.Node, n.AddressesInUse))
		}
	}
	return fmt.Sprintf("%d addresses on %s", v.AddressesInUse, strings.Join(parts, ", "))
}

func (a *app) poolSetNodeSelectorCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "set-node-selector NAME SELECTOR",
		Short: "Restrict a pool to the nodes whose labels match SELECTOR ('' for every node)",
		Long: `Set the node selector of a pool: from now on only nodes whose labels match SELECTOR
(Kubernetes label-selector syntax: zone=a,rack in (r1,r2),!gpu) take blocks and
addresses from it. An empty SELECTOR ('') lets every node use the pool again. Nodes that
no longer match keep the addresses they hold; they take no new one and give their
empty blocks of the pool back. A node's labels are those of its Node object, or coild
--node-labels (docs/coild.md). Needs cluster feature level 1. Setting the selector the
pool has already is success and writes nothing.`,
		Example: `  coilctl pool set-node-selector gpu 'accelerator in (a100,h100)'
  coilctl pool set-node-selector gpu ''`,
		Args: argsUsage(2, 2, "NAME and one SELECTOR ('' for every node)"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validName("pool", name); err != nil {
				return err
			}
			canon, err := allocator.ParseNodeSelector(args[1])
			if err != nil {
				return err
			}
			if err = a.connect(); err != nil {
				return err
			}
			changed, err := a.admin().SetNodeSelector(cmd.Context(), name, canon)
			if err != nil {
				return poolErr(name, err)
			}
			what := "node selector set to " + strconvQuote(canon)
			if canon == "" {
				what = "usable by every node"
			}
			if !changed {
				what += " (unchanged)"
			}
			return a.printPoolResult(cmd, name, what)
		}),
	}
}

func (a *app) poolDisableCommand() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "disable NAME",
		Short: "Stop a pool from handing out blocks and addresses (existing ones stay)",
		Long: `Disable a pool: no node takes a new block or address from it. Addresses it has
handed out stay with their pods until released; nodes give its empty blocks back at
once (on their next reconcile pass). An ADD that chooses the pool falls through to the
next pool the operator configured for that pod (namespace annotation, network config
"pool", coild --default-pool, in that order after the source that chose it); with none
enabled it is refused, naming the pool. 'pool show' says how many addresses remain and
where; 'pool delete' succeeds once none does. Needs cluster feature level 1. Disabling
a disabled pool is success and writes nothing. See docs/operations.md, "Moving pods to
another pool".`,
		Example: `  coilctl pool disable old --reason 'moving to pool new'`,
		Args:    argsUsage(1, 1, "one pool NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return a.poolSwitch(cmd, name, "disabled", func(ctx context.Context) (bool, error) {
				return a.admin().DisablePool(ctx, name, reason)
			})
		}),
	}
	c.Flags().StringVar(&reason, "reason", "", "why, recorded in the log (PoolDisabled) and shown by pool show")
	return c
}

func (a *app) poolEnableCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "enable NAME",
		Short:   "Let a disabled pool hand out addresses again",
		Example: `  coilctl pool enable old`,
		Args:    argsUsage(1, 1, "one pool NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return a.poolSwitch(cmd, name, "enabled", func(ctx context.Context) (bool, error) {
				return a.admin().EnablePool(ctx, name)
			})
		}),
	}
}

// poolSwitch runs change, a pool change that is success when it finds nothing to do
// (disable, enable), and reports the pool as done, or as "already done".
func (a *app) poolSwitch(cmd *cobra.Command, name, done string, change func(context.Context) (bool, error)) error {
	if err := a.connectForPool(name); err != nil {
		return err
	}
	changed, err := change(cmd.Context())
	if err != nil {
		return poolErr(name, err)
	}
	if !changed {
		done = "already " + done
	}
	return a.printPoolResult(cmd, name, done)
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

func (a *app) poolListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List pools: subnets, block size, blocks used/total",
		Args:  argsUsage(0, 0, "no arguments"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if err := a.connect(); err != nil {
				return err
			}
			st, err := loadState(cmd.Context(), a.log)
			if err != nil {
				return err
			}
			a.warnReserved(st.Cluster.Pools)
			views := []*poolView{}
			for _, name := range slices.Sorted(maps.Keys(st.Cluster.Pools)) {
				views = append(views, st.poolView(st.Cluster.Pools[name], false))
			}
			if a.opts.output != "table" {
				return a.printValue(views)
			}
			t := newTable(a.env.Stdout, "NAME", "SUBNETS", "BLOCK SIZE", "BLOCKS USED/TOTAL", "ADDRESSES IN USE", "SETTINGS")
			for _, v := range views {
				t.row(v.Name, strings.Join(v.Subnets, " "), v.BlockSize,
					fmt.Sprintf("%d/%d", v.Blocks.Used, v.Blocks.Total), fmt.Sprint(v.AddressesInUse), poolSettings(v))
			}
			return t.flush()
		}),
	}
}

func (a *app) poolShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a pool: blocks used and free, and per node its blocks and their prefixes",
		Example: `  coilctl pool show default`,
		Args:    argsUsage(1, 1, "one pool NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := a.connectForPool(name); err != nil {
				return err
			}
			st, err := loadState(cmd.Context(), a.log)
			if err != nil {
				return err
			}
			p, ok := st.Cluster.Pools[name]
			if !ok {
				return errors.Wrapf(ErrNotFound, "pool %q not found", name)
			}
			a.warnReserved(map[string]*projection.Pool{name: p})
			v := st.poolView(p, true)
			if a.opts.output != "table" {
				return a.printValue(v)
			}
			w := a.env.Stdout
			fmt.Fprintf(w, "Name:              %s\n", v.Name)
			fmt.Fprintf(w, "Subnets:           %s\n", strings.Join(v.Subnets, " "))
			fmt.Fprintf(w, "Block size:        %s, %d bits\n", v.BlockSize, v.BlockSizeBits)
			fmt.Fprintf(w, "Blocks:            %d used, %d free, %d total\n", v.Blocks.Used, v.Blocks.Free, v.Blocks.Total)
			if note := capNote(p); note != "" {
				fmt.Fprintf(w, "                   %s", note)
			}
			fmt.Fprintf(w, "Layout:            %s\n", v.Layout)
			sel := v.NodeSelector
			if sel == "" {
				sel = "(every node)"
			}
			fmt.Fprintf(w, "Node selector:     %s\n", sel)
			state := "enabled"
			if v.Disabled {
				state = "disabled"
				if v.DisabledReason != "" {
					state += " (" + v.DisabledReason + ")"
				}
			}
			fmt.Fprintf(w, "State:             %s\n", state)
			fmt.Fprintf(w, "Addresses in use:  %d\n", v.AddressesInUse)
			if v.Disabled {
				fmt.Fprintf(w, "Remaining:         %s\n", remaining(v))
			}
			fmt.Fprintf(w, "Created:           %s\n", fmtTime(v.Created))
			if len(p.Subnets) > 0 && p.Subnets[0].IPv4.IsValid() {
				nb := "handed out (coilctl pool set " + name + " --skip-network-broadcast=true to stop)"
				if v.SkipNetworkBroadcast {
					nb = "skipped"
				}
				fmt.Fprintf(w, "Network/broadcast: %s\n", nb)
			}
			if len(v.Reservations) > 0 {
				fmt.Fprintln(w, "\nReserved:")
				t := newTable(w, "RANGE", "REASON", "BY", "SINCE", "PENDING UNTIL RELEASED")
				for _, r := range v.Reservations {
					pend := "-"
					if len(r.Pending) > 0 {
						pend = strings.Join(r.Pending, ", ")
					}
					t.row(r.Range, r.Reason, r.By, fmtTime(r.Since), pend)
				}
				if err := t.flush(); err != nil {
					return err
				}
			}
			if len(v.Nodes) == 0 {
				_, err := fmt.Fprintln(w, "\nNo node holds a block of this pool.")
				return errors.Wrap(err, "write output")
			}
			fmt.Fprintln(w)
			t := newTable(w, "NODE", "BLOCKS", "ADDRESSES IN USE", "PREFIXES")
			for _, n := range v.Nodes {
				t.row(n.Node, fmt.Sprint(n.Blocks), fmt.Sprint(n.AddressesInUse), strings.Join(n.Prefixes, " "))
			}
			return t.flush()
		}),
	}
}

func (a *app) poolDeleteCommand() *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a pool (refused while any of its blocks is in use; asks for confirmation)",
		Long: `Delete a pool. Refused (exit 4) while any block of the pool is assigned to a node.
On a terminal coilctl shows the pool and asks for confirmation; in scripts pass --yes
(without a terminal and without --yes: exit 2, nothing deleted).`,
		Example: `  coilctl pool delete spare
  coilctl pool delete spare --yes`,
		Args: argsUsage(1, 1, "one pool NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validName("pool", name); err != nil {
				return err
			}
			if err := a.needConfirm(cmd, yes, fmt.Sprintf("delete pool %q", name)); err != nil {
				return err
			}
			if err := a.connect(); err != nil {
				return err
			}
			p, err := a.admin().CheckDeletePool(cmd.Context(), name)
			if err != nil {
				return poolErr(name, err)
			}
			plan := fmt.Sprintf("Delete pool %q: %s, %d blocks of %d addresses, none in use.",
				name, strings.Join(subnetStrings(p.Subnets), " "), p.NumBlocks(), p.BlockSize())
			if err = a.confirm(cmd.Context(), yes, plan, fmt.Sprintf("pool %q was not deleted", name)); err != nil {
				return err
			}
			if err = a.admin().DeletePool(cmd.Context(), name); err != nil {
				return poolErr(name, err)
			}
			if a.opts.output != "table" {
				return a.printValue(map[string]any{"name": name, "deleted": true})
			}
			_, err = fmt.Fprintf(a.env.Stdout, "pool %q deleted\n", name)
			return errors.Wrap(err, "write output")
		}),
	}
	yesFlag(c, &yes)
	return c
}

// warnReserved warns on stderr about pools that hold a range pool validation refuses
// today (projection.CheckUsable): they were defined before the rule, the log still
// replays them and nodes still serve them, but their pods may be broken.
func (a *app) warnReserved(pools map[string]*projection.Pool) {
	for _, name := range slices.Sorted(maps.Keys(pools)) {
		for _, s := range pools[name].Subnets {
			for _, p := range []netip.Prefix{s.IPv4, s.IPv6} {
				if err := projection.CheckUsable(p); err != nil {
					msg := strings.TrimSuffix(err.Error(), ": "+projection.ErrReservedRange.Error())
					fmt.Fprintf(a.env.Stderr, "coilctl: warning: pool %q: %s; such pools are refused now "+
						"(it was defined before): move its pods to another pool and delete it\n", name, msg)
				}
			}
		}
	}
}
