package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/readside"
)

func (a *app) historyCommand() *cobra.Command {
	var container, pod, at string
	var archives []string
	c := &cobra.Command{
		Use:   "history (ADDRESS | --container ID | --pod NAMESPACE/NAME) [--archive FILE]...",
		Short: "Every holder of an address over time, or every address a container or pod had",
		Long: `Print every holder an address ever had, from the log: container, interface, pod,
node, when it was assigned (FROM) and released (TO, "-" while still held) and why it
was released. The history of an address also shows when it was reserved ('coilctl pool
reserve': POD says "(reserved by WHO: REASON)", TO and RELEASE REASON are those of the
unreserve or of the pool's deletion), and marks a pod's fixed address ("(fixed)": it
claimed the address, with the annotation coil.cybozu.com/ip or the CNI "ips"
capability, on a node that may not own its block). With --container (a prefix of the
container ID) or --pod, print every address that container or pod ever had instead.

All node streams are read at one etcd revision. An assignment is paired with the next
release of the same container and interface on the same node. --pod and --container
(a prefix of 12 characters or more) read only the chunks of each node stream that the
attachment index says may mention them (see 'coilctl log index'); shorter prefixes read
every stream in full. Rows are ordered by
assignment time. With --at, only the holdings that covered that moment are printed:
"who had 10.1.2.3 at 14:00 last Tuesday?".

Once early events were archived ('coilctl log archive'), history needs them: pass the
archive files with --archive FILE (repeat it for the files of several archive runs, in
any order). Their events are verified (as 'coilctl log verify --file' does) and read
first, and each stream of the live log must continue them (sequence and hash chain),
so the output is what history printed before the archive. Without them, history of an
archived stream fails, naming the stream and what to pass.

Exit 3 when nothing matches.`,
		Example: `  coilctl history 10.64.3.7
  coilctl history 10.64.3.7 --at 2030-01-07T14:00:00Z
  coilctl history --pod default/web-0
  coilctl history --container 4f2a91 -o json
  coilctl history 10.64.3.7 --archive 2030-01.jsonl --archive 2030-02.jsonl`,
		Args: argsUsage(0, 1, "one ADDRESS, or none with --container or --pod"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			bulkGC() // reads whole streams: see log.go
			var q readside.Query
			given := 0
			if len(args) == 1 {
				addr, err := parseAddrArg(args[0])
				if err != nil {
					return err
				}
				q.Addr = addr
				given++
			}
			if container != "" {
				q.Container = strings.ToLower(container)
				given++
			}
			if pod != "" {
				ns, name, ok := strings.Cut(pod, "/")
				if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
					return usagef("--pod %q: want NAMESPACE/NAME", pod)
				}
				q.PodNamespace, q.PodName = ns, name
				given++
			}
			if given != 1 {
				return usagef("give exactly one of ADDRESS, --container or --pod")
			}
			var atPoint *readside.Point
			if at != "" {
				p, err := parsePoint("--at", at, a.env.Clock.Now())
				if err != nil {
					return err
				}
				if p.Rev != 0 {
					return usagef("--at %q: history --at takes a time or a duration, not a revision", at)
				}
				atPoint = &p
			}
			if err := a.connect(); err != nil {
				return err
			}
			hs, rev, err := readside.History(cmd.Context(), a.log, &q, a.index(), archives)
			if err != nil {
				return err
			}
			if atPoint != nil {
				kept := hs[:0]
				for _, h := range hs {
					if h.HeldAt(atPoint.Time) {
						kept = append(kept, h)
					}
				}
				hs = kept
			}
			if len(hs) == 0 {
				when := "in the log"
				if atPoint != nil {
					when = "at " + atPoint.Time.UTC().Format(time.RFC3339)
				}
				return errors.Mark(errors.Newf("no assignment of %s %s (log read at revision %d)", q.String(), when, rev), ErrNotFound)
			}
			return a.printHistory(hs)
		}),
	}
	c.Flags().StringVar(&container, "container", "", "every address of the container whose ID starts with this (case-insensitive hex)")
	c.Flags().StringVar(&pod, "pod", "", "every address of the pod NAMESPACE/NAME")
	c.Flags().StringVar(&at, "at", "", "only who held it at this moment: an RFC 3339 time, or a duration meaning that long ago (2h, 3d)")
	c.Flags().StringArrayVar(&archives, "archive", nil, "read the archived events of this file first (from 'coilctl log archive'; repeat for several, any order)")
	return c
}

func (a *app) printHistory(hs []*readside.Holding) error {
	if a.opts.output != "table" {
		return a.printValue(hs)
	}
	t := newTable(a.env.Stdout, "ADDRESS", "FROM", "TO", "NODE", "POD", "CONTAINER", "IF", "POOL", "RELEASE REASON")
	for _, h := range hs {
		to := ""
		reason := ""
		if h.To != nil {
			to = fmtTime(*h.To)
			reason = h.ReleaseReason
			if reason == "" {
				reason = "(none given)"
			}
		}
		node, pod := h.Node, podName(h.PodNamespace, h.PodName)
		switch {
		case h.Kind == readside.KindReservation:
			node, pod = "-", "(reserved by "+h.Actor+": "+h.Reason+")"
			if h.AfterRelease {
				pod = "(reserved after release by " + h.Actor + ": " + h.Reason + ")"
			}
		case h.Fixed:
			pod += " (fixed)"
		}
		t.row(joinAddrs(h.Addrs), fmtTime(h.From), to, node, pod,
			shortID(h.ContainerID), h.IfName, fmt.Sprintf("%s#%d", h.Pool, h.Block), reason)
	}
	return t.flush()
}

// index is the attachment index of the run's log, for history and events --pod and
// --container (each stream's indexed read bounded by --timeout, as the log's calls are).
func (a *app) index() *readside.Index {
	return &readside.Index{Store: a.etcd, Timeout: a.opts.timeout}
}
