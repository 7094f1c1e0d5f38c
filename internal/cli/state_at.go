package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/readside"
)

// point is a moment of the log: an etcd revision, or a time.
type point struct {
	rev  int64     // > 0: the state after the event(s) committed at this revision
	time time.Time // when rev is 0: the state after the events stamped at or before it
	text string
}

// parsePoint reads a moment given on the command line: a plain integer is an etcd
// revision; a duration ("90m", "2h", "3d", "1d12h") means that long before now; anything
// else must be an RFC 3339 time ("2030-01-07T14:00:00Z", "2030-01-07T14:00:00+09:00").
func parsePoint(what, s string, now time.Time) (point, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return point{}, usagef("%s: empty (want an RFC 3339 time, a duration like 2h, or a revision)", what)
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return point{}, usagef("%s %q: a revision is a positive integer", what, s)
		}
		return point{rev: n, text: s}, nil
	}
	if d, ok := parseAgo(s); ok {
		if d < 0 {
			return point{}, usagef("%s %q: a duration means that long ago; give it without a sign", what, s)
		}
		return point{time: now.Add(-d).UTC(), text: s}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return point{}, usagef("%s %q: want an RFC 3339 time (2030-01-07T14:00:00Z), a duration meaning that long ago (2h, 3d) or a revision (an integer)", what, s)
	}
	return point{time: t.UTC(), text: s}, nil
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

// includes reports whether e is at or before the point.
func (p point) includes(e *events.Event) bool {
	if p.rev > 0 {
		return e.Revision <= p.rev
	}
	return !e.Time.After(p.time)
}

// notBefore reports whether e is at or after the point.
func (p point) notBefore(e *events.Event) bool {
	if p.rev > 0 {
		return e.Revision >= p.rev
	}
	return !e.Time.Before(p.time)
}

func (p point) String() string {
	if p.rev > 0 {
		return "revision " + strconv.FormatInt(p.rev, 10)
	}
	return p.time.Format(time.RFC3339Nano)
}

// stateAt is the whole state as it was at p, with the revision and time it reflects.
type stateAt struct {
	*snapshot
	// Current is the revision the log was read at.
	Current int64
	// Time is the time of the newest event folded (zero for an empty state).
	Time time.Time
	// ReadAtRevision tells whether etcd was read at p's revision (else the events were
	// read at Current and folded up to p).
	ReadAtRevision bool
}

// loadStateAt folds every stream up to p (loadStatesAt with one point).
func loadStateAt(ctx context.Context, log events.Log, p point, archives []string) (*stateAt, error) {
	sts, err := loadStatesAt(ctx, log, []point{p}, nil, archives)
	if err != nil {
		return nil, err
	}
	return sts[0], nil
}

// loadStatesAt folds every stream up to each of points, all against the log at one
// current revision. A revision still in etcd's history is read at that revision; a
// compacted one, or a time, is read at the current revision and each stream folded
// through its last event at or before the point. With archive files, the latter are
// folded from the archived events first (foldArchived: one pass over the files for all
// such points) and continued with the live log; streams the archives do not hold fold as
// without them. Errors about one point are wrapped with its label (labels[i], when
// given).
func loadStatesAt(ctx context.Context, log events.Log, points []point, labels []string, archives []string) ([]*stateAt, error) {
	label := func(i int, err error) error {
		if i < len(labels) && labels[i] != "" {
			return errors.Wrap(err, labels[i])
		}
		return err
	}
	_, current, err := log.Streams(ctx, "cluster", 0)
	if err != nil {
		return nil, errors.Wrap(err, "read the log's revision")
	}
	out := make([]*stateAt, len(points))
	var folded []int // the points folded up to from the current log
	for i, p := range points {
		if p.rev > current {
			return nil, label(i, usagef("revision %d is in the future: the log is at revision %d", p.rev, current))
		}
		if p.rev > 0 {
			res, ferr := foldStreams(ctx, log, p.rev, nil)
			switch {
			case ferr == nil:
				out[i] = &stateAt{snapshot: &snapshot{State: &readside.State{State: res.state, Rev: p.rev}}, Current: current,
					Time: unixTime(res.lastTime), ReadAtRevision: true}
				continue
			case !errors.Is(ferr, events.ErrCompacted):
				return nil, label(i, ferr)
			}
			// etcd compacted that revision away: fold the current log up to it.
		}
		folded = append(folded, i)
	}
	if len(folded) == 0 {
		return out, nil
	}
	res := make([]*foldResult, len(folded))
	if len(archives) == 0 {
		for k, i := range folded {
			if res[k], err = foldStreams(ctx, log, current, points[i].includes); err != nil {
				return nil, label(i, err)
			}
		}
	} else {
		keeps := make([]func(*events.Event) bool, len(folded))
		for k, i := range folded {
			keeps[k] = points[i].includes
		}
		if res, err = foldArchived(ctx, log, current, keeps, archives); err != nil {
			if len(folded) == 1 {
				return nil, label(folded[0], err)
			}
			return nil, err
		}
	}
	for k, i := range folded {
		rev := points[i].rev
		if rev == 0 {
			rev = res[k].lastRev
		}
		out[i] = &stateAt{snapshot: &snapshot{State: &readside.State{State: res[k].state, Rev: rev}}, Current: current, Time: unixTime(res[k].lastTime)}
	}
	return out, nil
}

func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// stateView is the JSON/YAML form of `state`.
type stateView struct {
	Revision  int64         `json:"revision"`
	Time      *time.Time    `json:"time"`
	Pools     []*poolView   `json:"pools"`
	Blocks    []blockView   `json:"blocks"`
	Addresses []addressView `json:"addresses"`
}

func (s *stateAt) view() *stateView {
	v := &stateView{Revision: s.Rev, Pools: []*poolView{}, Blocks: s.blocks(filters{}), Addresses: s.addresses(filters{})}
	if !s.Time.IsZero() {
		t := s.Time
		v.Time = &t
	}
	for _, name := range sortedKeys(s.Cluster.Pools) {
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
			var p point
			var err error
			switch {
			case (at == "") == (revision == ""):
				return usagef("give exactly one of --at or --revision")
			case revision != "":
				n, perr := strconv.ParseInt(revision, 10, 64)
				if perr != nil || n <= 0 {
					return usagef("--revision %q: want a positive integer (an etcd revision)", revision)
				}
				p = point{rev: n, text: revision}
			default:
				if p, err = parsePoint("--at", at, a.env.Clock.Now()); err != nil {
					return err
				}
			}
			if err = a.connect(); err != nil {
				return err
			}
			st, err := loadStateAt(cmd.Context(), a.log, p, archives)
			if err != nil {
				return err
			}
			return a.printState(p, st)
		}),
	}
	c.Flags().StringVar(&at, "at", "", "the moment: RFC 3339 time, duration ago (2h, 3d) or revision")
	c.Flags().StringVar(&revision, "revision", "", "the etcd revision")
	c.Flags().StringArrayVar(&archives, "archive", nil, "fold the archived events of this file first (from 'coilctl log archive'; repeat for several, any order)")
	return c
}

func (a *app) printState(p point, st *stateAt) error {
	v := st.view()
	if a.opts.output != "table" {
		return a.printValue(v)
	}
	w := a.env.Stdout
	when := "-"
	if v.Time != nil {
		when = fmtTime(*v.Time)
	}
	fmt.Fprintf(w, "State at %s (revision %d, last event %s; log now at revision %d)\n\n", p, v.Revision, when, st.Current)
	fmt.Fprintln(w, "POOLS")
	t := newTable(w, "NAME", "SUBNETS", "BLOCK SIZE", "BLOCKS USED/TOTAL", "ADDRESSES IN USE")
	for _, pv := range v.Pools {
		t.row(pv.Name, strings.Join(pv.Subnets, " "), pv.BlockSize, fmt.Sprintf("%d/%d", pv.Blocks.Used, pv.Blocks.Total), fmt.Sprint(pv.AddressesInUse))
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
	return t.flush()
}
