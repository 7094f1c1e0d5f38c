package cli

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// parseRanges parses RANGE arguments (allocator.ParseRange): a bad one is a usage error.
func parseRanges(args []string) ([]events.AddrRange, error) {
	out := make([]events.AddrRange, 0, len(args))
	for _, s := range args {
		r, err := allocator.ParseRange(s)
		if err != nil {
			return nil, errors.Mark(err, ErrUsage)
		}
		out = append(out, r)
	}
	return out, nil
}

// reservationView is a reservation as pool show prints it.
type reservationView struct {
	Range        string    `json:"range"`
	Reason       string    `json:"reason,omitempty"`
	By           string    `json:"by"`
	Since        time.Time `json:"since"`
	AfterRelease bool      `json:"afterRelease,omitempty"`
	// Pending lists the addresses of an after-release reservation still held, and by whom
	// ("10.1.0.5 (pod default/web-0 on node n1)"): each becomes reserved when released.
	Pending []string `json:"pending,omitempty"`
}

// reservationViews lists the pool's reservations with the addresses still held in them.
// poolRangesArgs checks the arguments of pool reserve and unreserve (POOL RANGE...
// --reason TEXT; noReason is the usage error without a reason) and connects.
func (a *app) poolRangesArgs(args []string, reason, noReason string) (string, []events.AddrRange, error) {
	name := args[0]
	if err := validName("pool", name); err != nil {
		return "", nil, err
	}
	if strings.TrimSpace(reason) == "" {
		return "", nil, usagef("%s", noReason)
	}
	rs, err := parseRanges(args[1:])
	if err != nil {
		return "", nil, err
	}
	return name, rs, a.connect()
}

func (s *snapshot) reservationViews(p *projection.Pool) []reservationView {
	out := []reservationView{}
	if len(p.Reserved) == 0 {
		return out
	}
	pending := map[int][]string{}
	for _, nd := range slices.Sorted(maps.Keys(s.Nodes)) {
		n := s.Nodes[nd]
		for key, asg := range n.Attached {
			if asg.Pool != p.Name {
				continue
			}
			for _, a := range asg.Addrs {
				for i, r := range p.Reserved {
					if r.First.Is4() == a.Is4() && !a.Less(r.First) && !r.Last.Less(a) {
						h := allocator.Holder{Addr: a, Node: nd, AttachKey: key, Assignment: *asg}
						pending[i] = append(pending[i], h.String())
					}
				}
			}
		}
	}
	for i, r := range p.Reserved {
		v := reservationView{Range: r.Range().String(), Reason: r.Reason, By: r.Actor, Since: r.Time, AfterRelease: r.AfterRelease, Pending: pending[i]}
		out = append(out, v)
	}
	return out
}

func (a *app) poolReserveCommand() *cobra.Command {
	var reason string
	var afterRelease bool
	c := &cobra.Command{
		Use:   "reserve POOL RANGE... --reason TEXT",
		Short: "Reserve addresses of a pool: no pod gets them (refused while a pod holds one, unless --after-release)",
		Long: `Reserve addresses of a pool so that no pod is ever given them: gateways, VIPs,
addresses another system uses. A RANGE is one address (10.64.0.5), a CIDR prefix
(10.64.7.0/24) or FIRST-LAST (10.64.0.10-10.64.0.20); every range must lie inside one
subnet of the pool and overlap neither another range nor a reservation. In a
dual-stack pool a pod gets the same offset in both families, so a reserved address
keeps that offset out of use in both.

Refused (exit 4, naming each holder: address, pod, node) when a pod holds an address of
a range. --after-release reserves anyway: the pods keep their addresses, and each
address becomes reserved the moment its pod releases it (pool show lists them as
pending). Blocks wholly reserved are never taken by a node.

Recorded as an AddressesReserved event (cluster feature level 1) with --reason, who and
when; pool show lists the reservations, pool unreserve takes them back.`,
		Example: `  coilctl pool reserve default 10.64.0.1 10.64.255.0/24 --reason "gateways and VIPs"
  coilctl pool reserve default 10.64.3.7 --reason "handed to the LB" --after-release`,
		Args: argsUsage(2, -1, "a POOL and at least one RANGE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name, rs, err := a.poolRangesArgs(args, reason, "--reason is required: say why the addresses are reserved (it is recorded in the AddressesReserved event and shown by pool show)")
			if err != nil {
				return err
			}
			held, err := a.admin().Reserve(cmd.Context(), allocator.ReserveRequest{Pool: name, Ranges: rs, Reason: reason, AfterRelease: afterRelease})
			if err != nil {
				return poolErr(name, err)
			}
			var pending []string
			for _, h := range held {
				pending = append(pending, h.String())
			}
			if a.opts.output != "table" {
				return a.printValue(map[string]any{"pool": name, "reserved": rangeStrings(rs), "reason": reason, "pending": nonNil(pending)})
			}
			w := a.env.Stdout
			fmt.Fprintf(w, "pool %q: reserved %s\n", name, strings.Join(rangeStrings(rs), " "))
			for _, p := range pending {
				fmt.Fprintf(w, "  pending until released: %s\n", p)
			}
			return nil
		}),
	}
	c.Flags().StringVar(&reason, "reason", "", "why (required); recorded in the AddressesReserved event")
	c.Flags().BoolVar(&afterRelease, "after-release", false, "reserve addresses pods hold too: each becomes reserved when its pod releases it")
	return c
}

func (a *app) poolUnreserveCommand() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "unreserve POOL RANGE... --reason TEXT",
		Short: "Take back reservations: pods may get those addresses again",
		Long: `Take reserved addresses back: every address of every RANGE must be reserved
(exit 4 names the first that is not). A reservation partly covered keeps the rest, with
its reason. Recorded as an AddressesUnreserved event with --reason (required).`,
		Example: `  coilctl pool unreserve default 10.64.255.0/25 --reason "VIPs moved"`,
		Args:    argsUsage(2, -1, "a POOL and at least one RANGE"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name, rs, err := a.poolRangesArgs(args, reason, "--reason is required: say why the addresses may be handed out again (it is recorded in the AddressesUnreserved event)")
			if err != nil {
				return err
			}
			if err = a.admin().Unreserve(cmd.Context(), name, rs, reason); err != nil {
				return poolErr(name, err)
			}
			if a.opts.output != "table" {
				return a.printValue(map[string]any{"pool": name, "unreserved": rangeStrings(rs), "reason": reason})
			}
			_, err = fmt.Fprintf(a.env.Stdout, "pool %q: unreserved %s\n", name, strings.Join(rangeStrings(rs), " "))
			return errors.Wrap(err, "write output")
		}),
	}
	c.Flags().StringVar(&reason, "reason", "", "why (required); recorded in the AddressesUnreserved event")
	return c
}

func (a *app) poolSetCommand() *cobra.Command {
	var skip bool
	c := &cobra.Command{
		Use:   "set NAME --skip-network-broadcast=true|false",
		Short: "Change a pool's options: whether it hands out its IPv4 network and broadcast addresses",
		Long: `Change a pool's options.

--skip-network-broadcast=true: the pool no longer hands out the network address (the
first) and the broadcast address (the last) of each IPv4 subnet of /30 or shorter. Pods
holding one keep it. =false hands them out again, as pools made before this option
(and pools made with --skip-network-broadcast=false) do. Recorded as a
PoolNetworkBroadcastSet event (cluster feature level 1); setting what is set writes
nothing.`,
		Example: `  coilctl pool set default --skip-network-broadcast=true`,
		Args:    argsUsage(1, 1, "one pool NAME"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validName("pool", name); err != nil {
				return err
			}
			if !cmd.Flags().Changed("skip-network-broadcast") {
				return usagef("nothing to set: give --skip-network-broadcast=true or =false")
			}
			if err := a.connect(); err != nil {
				return err
			}
			changed, err := a.admin().SetNetworkBroadcast(cmd.Context(), name, skip)
			if err != nil {
				return poolErr(name, err)
			}
			what := "changed"
			if !changed {
				what = "unchanged"
			}
			if a.opts.output != "table" {
				return a.printValue(map[string]any{"pool": name, "skipNetworkBroadcast": skip, "changed": changed})
			}
			_, err = fmt.Fprintf(a.env.Stdout, "pool %q %s: skip network and broadcast addresses: %s\n", name, what, yesNo(skip))
			return errors.Wrap(err, "write output")
		}),
	}
	c.Flags().BoolVar(&skip, "skip-network-broadcast", true, "do not hand out the network and broadcast address of the pool's IPv4 subnets")
	return c
}

func rangeStrings(rs []events.AddrRange) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
