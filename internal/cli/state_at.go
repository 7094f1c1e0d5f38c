package cli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/readside"
)

// parsePoint reads a moment given on the command line: a plain integer is an etcd
// revision; a duration ("90m", "2h", "3d", "1d12h") means that long before now; anything
// else must be an RFC 3339 time ("2030-01-07T14:00:00Z", "2030-01-07T14:00:00+09:00").
func parsePoint(what, s string, now time.Time) (readside.Point, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return readside.Point{}, usagef("%s: empty (want an RFC 3339 time, a duration like 2h, or a revision)", what)
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return readside.Point{}, usagef("%s %q: a revision is a positive integer", what, s)
		}
		return readside.Point{Rev: n}, nil
	}
	if d, ok := parseAgo(s); ok {
		if d < 0 {
			return readside.Point{}, usagef("%s %q: a duration means that long ago; give it without a sign", what, s)
		}
		return readside.Point{Time: now.Add(-d).UTC()}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return readside.Point{}, usagef("%s %q: want an RFC 3339 time (2030-01-07T14:00:00Z), a duration meaning that long ago (2h, 3d) or a revision (an integer)", what, s)
	}
	return readside.Point{Time: t.UTC()}, nil
}

// parseAgo parses a Go duration, also allowing a leading number of days ("3d", "1d12h").
func parseAgo(s string) (time.Duration, bool) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, false
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, true
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, false
	}
	return days + d, true
}

// stateErr marks the read side's errors for the exit codes: a revision in the future is
// a usage error (2).
func stateErr(err error) error {
	if errors.Is(err, readside.ErrFutureRevision) {
		return errors.Mark(err, ErrUsage)
	}
	return err
}

// OldestStored bounds the log's oldest-stored read by --timeout, like the other calls
// (readside.OldestStorer: state and diff fold from an older snapshot when the newest is
// after the moment); 0 when the log cannot tell.
func (l *timeoutLog) OldestStored(ctx context.Context, s events.Stream, rev int64) (uint64, int64, error) {
	o, ok := l.Log.(readside.OldestStorer)
	if !ok {
		return 0, 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return o.OldestStored(ctx, s, rev)
}

// stateView is the JSON/YAML form of `state`.
type stateView struct {
	Revision int64      `json:"revision"`
	Time     *time.Time `json:"time"`
	// FeatureLevel is the cluster's feature level (coilctl cluster version); left out at 0.
	FeatureLevel events.Level  `json:"featureLevel,omitempty"`
	Pools        []*poolView   `json:"pools"`
	Blocks       []blockView   `json:"blocks"`
	Addresses    []addressView `json:"addresses"`
	// Claims are the standing fixed-address claims (coil.cybozu.com/ip, CNI "ips").
	Claims []readside.PoolClaim `json:"claims"`
}

func viewState(st *readside.StateAt) *stateView {
	s := &snapshot{State: &st.State}
	v := &stateView{Revision: s.Rev, FeatureLevel: st.Cluster.Level, Pools: []*poolView{}, Blocks: s.blocks(filters{}), Addresses: s.addresses(filters{}),
		Claims: readside.Claims(st.State.State)}
	if !st.Time.IsZero() {
		t := st.Time
		v.Time = &t
	}
	for _, name := range slices.Sorted(maps.Keys(s.Cluster.Pools)) {
		v.Pools = append(v.Pools, s.poolView(s.Cluster.Pools[name], false))
	}
	return v
}

func (a *app) stateCommand() *cobra.Command {
	var at, revision string
	var archives []string
	c := &cobra.Command{
		Use:   "state (--at TIME | --revision N) [--archive FILE]...",
		Short: "Pools, blocks and addresses as they were at a past moment",
		Long: `Print the pools, the blocks (with their owner) and the addresses (with their holder)
as they were at a past moment: every stream of the log folded up to that moment.

--revision N is the state right after etcd revision N (the REV column of 'coilctl
events'). While N is still in etcd's history the log is read as of N; after etcd
compacted it, the current log is read and every stream folded through its last event
committed at or before N (same result while no events were archived).

--at TIME is the state after every event stamped at or before TIME: an RFC 3339 time, a
duration meaning that long ago (2h, 3d), or a revision (a plain integer, as --revision).

A moment before a stream's oldest stored snapshot needs the events archived by 'coilctl
log archive': pass the archive files with --archive FILE (repeat it for the files of
several archive runs, in any order). Their events are verified (as 'coilctl log verify
--file' does) and folded first, and each stream of the live log must continue them
(sequence and hash chain), so the state is what state printed before the archive.
Without them, a moment that needs archived events fails, naming the stream and what to
pass; streams with a snapshot at or before the moment never need them.`,
		Example: `  coilctl state --at 2030-01-07T14:00:00Z
  coilctl state --at 2h
  coilctl state --revision 1234 -o json
  coilctl state --at 2030-01-07T14:00:00Z --archive 2030-01.jsonl --archive 2030-02.jsonl`,
		Args: argsUsage(0, 0, "no arguments (give --at or --revision)"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			bulkGC() // reads whole streams: see log.go
			var p readside.Point
			var err error
			switch {
			case (at == "") == (revision == ""):
				return usagef("give exactly one of --at or --revision")
			case revision != "":
				n, perr := strconv.ParseInt(revision, 10, 64)
				if perr != nil || n <= 0 {
					return usagef("--revision %q: want a positive integer (an etcd revision)", revision)
				}
				p = readside.Point{Rev: n}
			default:
				if p, err = parsePoint("--at", at, a.env.Clock.Now()); err != nil {
					return err
				}
			}
			if err = a.connect(); err != nil {
				return err
			}
			st, err := readside.LoadAt(cmd.Context(), a.log, p, archives)
			if err != nil {
				return stateErr(err)
			}
			return a.printState(p, st)
		}),
	}
	c.Flags().StringVar(&at, "at", "", "the moment: RFC 3339 time, duration ago (2h, 3d) or revision")
	c.Flags().StringVar(&revision, "revision", "", "the etcd revision")
	c.Flags().StringArrayVar(&archives, "archive", nil, "fold the archived events of this file first (from 'coilctl log archive'; repeat for several, any order)")
	return c
}

func (a *app) printState(p readside.Point, st *readside.StateAt) error {
	v := viewState(st)
	if a.opts.output != "table" {
		return a.printValue(v)
	}
	w := a.env.Stdout
	when := "-"
	if v.Time != nil {
		when = fmtTime(*v.Time)
	}
	fmt.Fprintf(w, "State at %s (revision %d, last event %s; log now at revision %d)\n", p, v.Revision, when, st.Current)
	if v.FeatureLevel != events.LevelBase {
		fmt.Fprintf(w, "Cluster feature level %d\n", v.FeatureLevel)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "POOLS")
	t := newTable(w, "NAME", "SUBNETS", "BLOCK SIZE", "BLOCKS USED/TOTAL", "ADDRESSES IN USE", "SETTINGS")
	for _, pv := range v.Pools {
		t.row(pv.Name, strings.Join(pv.Subnets, " "), pv.BlockSize, fmt.Sprintf("%d/%d", pv.Blocks.Used, pv.Blocks.Total), fmt.Sprint(pv.AddressesInUse),
			poolSettings(pv))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nBLOCKS")
	t = newTable(w, "POOL", "INDEX", "PREFIXES", "NODE", "SINCE", "ADDRESSES IN USE")
	for _, b := range v.Blocks {
		t.row(b.Pool, fmt.Sprint(b.Index), strings.Join(b.Prefixes, ","), b.Node, fmtTime(b.Since), fmt.Sprint(b.AddressesInUse))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nADDRESSES")
	t = newTable(w, "ADDRESS", "POOL", "BLOCK", "NODE", "CONTAINER", "IF", "POD", "SINCE")
	for _, ad := range v.Addresses {
		t.row(ad.Address.String(), ad.Pool, ad.Block, ad.Node, shortID(ad.ContainerID), ad.IfName, podName(ad.PodNamespace, ad.PodName), fmtTime(ad.Since))
	}
	if err := t.flush(); err != nil || len(v.Claims) == 0 {
		return err
	}
	fmt.Fprintln(w, "\nFIXED-ADDRESS CLAIMS")
	t = newTable(w, "ADDRESS", "POOL", "BLOCK", "NODE", "CONTAINER", "IF", "POD", "SINCE")
	for _, c := range v.Claims {
		t.row(joinAddrs(c.Addrs), c.Pool, fmt.Sprint(c.Block), c.Node, shortID(c.ContainerID), c.IfName, podName(c.PodNamespace, c.PodName), fmtTime(c.Since))
	}
	return t.flush()
}

// poolSettings summarizes what a pool's settings events (issue 14) made of it, for the
// state table: "disabled; nodes: zone=a; skips network/broadcast; 2 reserved ranges",
// "" when it has none of them (pool show has the details).
func poolSettings(pv *poolView) string {
	var parts []string
	if pv.Disabled {
		parts = append(parts, "disabled")
	}
	if pv.NodeSelector != "" {
		parts = append(parts, "nodes: "+pv.NodeSelector)
	}
	if pv.SkipNetworkBroadcast {
		parts = append(parts, "skips network/broadcast")
	}
	switch n := len(pv.Reservations); n {
	case 0:
	case 1:
		parts = append(parts, "1 reserved range")
	default:
		parts = append(parts, fmt.Sprintf("%d reserved ranges", n))
	}
	return strings.Join(parts, "; ")
}
