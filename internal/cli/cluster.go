package cli

import (
	"fmt"
	"strconv"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/events"
)

func (a *app) clusterCommand() *cobra.Command {
	version := a.clusterVersionCommand()
	version.AddCommand(a.clusterVersionRaiseCommand())
	return a.group("cluster", "Cluster-wide settings: the feature level (cluster version)", version)
}

// levelView is `coilctl cluster version show`'s output.
type levelView struct {
	Cluster   events.Level `json:"cluster"`
	Supported events.Level `json:"supported"`
	// Build identifies this coilctl's build.
	Build  string           `json:"build"`
	Nodes  []levelNodeView  `json:"nodes"`
	Behind []string         `json:"behind"`
	Next   *levelNextReport `json:"next,omitempty"`
}

type levelNodeView struct {
	Node   string       `json:"node"`
	Level  events.Level `json:"level"`
	Build  string       `json:"build,omitempty"`
	Legacy bool         `json:"legacy,omitempty"`
}

// levelNextReport says what raising the cluster to Supported would turn on.
type levelNextReport struct {
	Level    events.Level  `json:"level"`
	Types    []events.Type `json:"types"`
	Possible bool          `json:"possible"`
}

// clusterVersionCommand shows the levels; its subcommand raise raises the cluster's.
func (a *app) clusterVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the cluster's feature level, this coilctl's, and every live coild's; raise it (subcommand raise)",
		Long: `Show the cluster's feature level (cluster version), the highest level this coilctl
supports, and the level each live coild reads (from its liveness key).

Features whose events older releases cannot read need a level; the level is raised
only once every live coild reads it (coilctl cluster version raise, or the first
command that needs it). See docs/operations.md, "Upgrading".`,
		Args: argsUsage(0, 0, "no arguments, or the subcommand raise"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if err := a.connect(); err != nil {
				return err
			}
			st, err := a.admin().LevelStatus(cmd.Context())
			if err != nil {
				return err
			}
			v := levelView{Cluster: st.Cluster, Supported: st.Supported, Build: events.Build(), Nodes: []levelNodeView{}, Behind: st.Behind}
			for _, n := range st.Nodes {
				v.Nodes = append(v.Nodes, levelNodeView{Node: n.Node, Level: n.Level, Build: n.Build, Legacy: n.Legacy})
			}
			if st.Cluster < st.Supported {
				next := st.Cluster + 1
				v.Next = &levelNextReport{Level: next, Types: events.TypesAt(next), Possible: len(st.Behind) == 0}
			}
			if a.opts.output != "table" {
				return a.printValue(v)
			}
			w := a.env.Stdout
			fmt.Fprintf(w, "Cluster feature level:  %d\n", v.Cluster)
			fmt.Fprintf(w, "This coilctl supports:  %d (build %s)\n", v.Supported, v.Build)
			switch {
			case v.Next == nil:
				fmt.Fprintln(w, "Raise:                  nothing to raise")
			case v.Next.Possible:
				fmt.Fprintf(w, "Raise:                  possible to %d (coilctl cluster version raise; also done by the first command that needs it)\n", v.Next.Level)
			default:
				fmt.Fprintf(w, "Raise:                  not before every coild reads level %d; behind: %d\n", v.Next.Level, len(v.Behind))
			}
			fmt.Fprintln(w)
			if len(v.Nodes) == 0 {
				_, err := fmt.Fprintln(w, "No live coild.")
				return errors.Wrap(err, "write output")
			}
			t := newTable(w, "NODE", "LEVEL", "BUILD")
			for _, n := range v.Nodes {
				build := n.Build
				if n.Legacy {
					build = "(a release before feature levels)"
				}
				t.row(n.Node, strconv.FormatUint(uint64(n.Level), 10), build)
			}
			return t.flush()
		}),
	}
}

func (a *app) clusterVersionRaiseCommand() *cobra.Command {
	var to uint32
	c := &cobra.Command{
		Use:   "raise",
		Short: "Raise the cluster's feature level once every live coild reads it",
		Long: `Raise the cluster's feature level (default: the highest this coilctl supports).

Refused (exit 4) while a live coild runs a release that does not read the level; the
message names them. Levels never go down: after a raise, a coild of an older release
stops at the first event it cannot read, so upgrade every coild first. Commands that
need a higher level (e.g. pool reservations) raise it themselves when they can.`,
		Example: `  coilctl cluster version raise
  coilctl cluster version raise --to 1`,
		Args: argsUsage(0, 0, "no arguments"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("to") && to == 0 {
				return usagef("--to 0: levels start at 1 (0 is the level of a log that never raised it)")
			}
			if events.Level(to) > events.CurrentLevel {
				return usagef("--to %d: this coilctl supports feature levels up to %d; use a newer coilctl", to, events.CurrentLevel)
			}
			if err := a.connect(); err != nil {
				return err
			}
			from, now, err := a.admin().RaiseLevel(cmd.Context(), events.Level(to))
			if err != nil {
				return err
			}
			res := struct {
				From    events.Level `json:"from"`
				Level   events.Level `json:"level"`
				Changed bool         `json:"changed"`
			}{from, now, from != now}
			if a.opts.output != "table" {
				return a.printValue(res)
			}
			msg := fmt.Sprintf("cluster feature level raised from %d to %d", from, now)
			if from == now {
				msg = fmt.Sprintf("cluster feature level is already %d", now)
			}
			_, err = fmt.Fprintln(a.env.Stdout, msg)
			return errors.Wrap(err, "write output")
		}),
	}
	c.Flags().Uint32Var(&to, "to", 0, "level to raise to (default: the highest this coilctl supports)")
	return c
}
