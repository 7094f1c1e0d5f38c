package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logio"
)

// logCommand is `coilctl log`: export, verify, import, snapshot, archive, index.
func (a *app) logCommand() *cobra.Command {
	return a.group("log", "Export, verify, import, snapshot and archive the event log; build its index",
		a.logExportCommand(), a.logVerifyCommand(), a.logImportCommand(), a.logSnapshotCommand(), a.logArchiveCommand(),
		a.logIndexCommand())
}

// rawLog is the log on the run's etcd client without coilctl's per-call timeout: export,
// import, verify and archive run as long as the log is long.
func (a *app) rawLog() (*events.EtcdLog, error) {
	bulkGC()
	if err := a.connect(); err != nil {
		return nil, err
	}
	return events.NewEtcdLog(a.cli, events.EtcdConfig{Prefix: a.opts.etcd.Prefix}), nil
}

// bulkGC lets the heap grow 3x between collections instead of 2x: the bulk commands
// stream with a small live heap (tens of MiB), so this trades a little memory for less
// collector CPU (about 15% of an export's time otherwise).
func bulkGC() { debug.SetGCPercent(200) }

// logErr marks logio's errors for the exit codes: a refused import (a log already there,
// live nodes) is 4, a broken log 1.
func logErr(err error) error {
	if errors.Is(err, logio.ErrNotEmpty) || errors.Is(err, logio.ErrLiveNodes) {
		return errors.Mark(err, ErrRefused)
	}
	return err
}

func (a *app) logExportCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "export FILE",
		Short: "Write the whole log to FILE as JSON Lines ('-' for stdout)",
		Long: `Write the whole event log, read at one etcd revision, to FILE ('-': standard output):
a header line {"coilLogExport":1,"kind":"export","revision":R,"streams":{...}} then one
event per line (its JSON form, with its hash), stream by stream. Memory stays flat.
A file is written through FILE.tmp and renamed when complete.`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			lg, err := a.rawLog()
			if err != nil {
				return err
			}
			defer lg.Close()
			p, done := a.progress("export")
			var h logio.Header
			if args[0] == "-" {
				h, err = logio.Export(cmd.Context(), lg, a.env.Stdout, logio.ExportOptions{Now: a.env.Clock.Now(), Progress: p})
				done()
				return logErr(err)
			}
			err = logio.WriteFileAtomic(args[0], func(w io.Writer) error {
				var eerr error
				h, eerr = logio.Export(cmd.Context(), lg, w, logio.ExportOptions{Now: a.env.Clock.Now(), Progress: p})
				return eerr
			})
			done()
			if err != nil {
				return logErr(err)
			}
			return a.printLogSummary("exported", args[0], h)
		}),
	}
}

// logSummary is the -o json|yaml form of export, import and archive results.
type logSummary struct {
	Action   string                              `json:"action"`
	File     string                              `json:"file"`
	Kind     string                              `json:"kind"`
	Revision int64                               `json:"revision"`
	Events   int64                               `json:"events"`
	Deleted  int64                               `json:"deleted,omitempty"`
	Streams  map[events.Stream]logio.StreamRange `json:"streams"`
}

func (a *app) printLogSummary(action, file string, h logio.Header) error {
	return a.printSummary(logSummary{Action: action, File: file, Kind: h.Kind, Revision: h.Revision, Events: h.Total(), Streams: h.Streams})
}

func (a *app) printSummary(s logSummary) error {
	if a.opts.output != "table" {
		return a.printValue(s)
	}
	extra := ""
	if s.Deleted > 0 {
		extra = fmt.Sprintf(", %d deleted from etcd", s.Deleted)
	}
	_, err := fmt.Fprintf(a.env.Stdout, "%s %d events of %d streams (revision %d) %s %s%s\n",
		s.Action, s.Events, len(s.Streams), s.Revision, map[bool]string{true: "from", false: "to"}[s.Action == "imported"], s.File, extra)
	return errors.Wrap(err, "write output")
}

func (a *app) logVerifyCommand() *cobra.Command {
	var files []string
	var thenLive bool
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check the hash chains of the live log or of export/archive files",
		Long: `Check hash chains, dense sequences and heads. Without --file: the live log at one
etcd revision (every stream from its oldest stored event, that each head names the last
event and each snapshot pointer a stored snapshot). With --file (repeatable, in order:
oldest archive first): each file's events (every JSON event must re-encode to the bytes
its "hash" was taken of) and that each file continues the streams of the files before;
--then-live also checks that the live log continues them.

Exit 0 if everything verifies; 1 naming the first bad stream and sequence
("chain broken at node/n1 #17: ...").`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if thenLive && len(files) == 0 {
				return usagef("--then-live needs --file")
			}
			ver := logio.NewVerifier()
			type fileReport struct {
				File    string `json:"file"`
				Kind    string `json:"kind"`
				Streams int    `json:"streams"`
				Events  int64  `json:"events"`
			}
			var out struct {
				Files []fileReport      `json:"files,omitempty"`
				Live  *logio.Report     `json:"live,omitempty"`
				Heads map[string]uint64 `json:"heads"`
			}
			for _, f := range files {
				h, err := a.verifyFile(cmd.Context(), ver, f)
				if err != nil {
					return err
				}
				out.Files = append(out.Files, fileReport{File: f, Kind: h.Kind, Streams: len(h.Streams), Events: h.Total()})
			}
			if len(files) == 0 || thenLive {
				lg, err := a.rawLog()
				if err != nil {
					return err
				}
				defer lg.Close()
				p, done := a.progress("verify live")
				ver.Progress = p
				rep, err := ver.Live(cmd.Context(), lg)
				done()
				if err != nil {
					return err
				}
				out.Live = &rep
			}
			out.Heads = map[string]uint64{}
			for s, v := range ver.Known() {
				out.Heads[string(s)] = v.Seq
			}
			if a.opts.output != "table" {
				return a.printValue(out)
			}
			for _, f := range out.Files {
				fmt.Fprintf(a.env.Stdout, "%s: %s of %d streams, %d events: ok\n", f.File, f.Kind, f.Streams, f.Events)
			}
			if out.Live != nil {
				fmt.Fprintf(a.env.Stdout, "live log at revision %d: %d streams, %d events: ok\n", out.Live.Revision, out.Live.Streams, out.Live.Events)
			}
			return nil
		}),
	}
	c.Flags().StringArrayVar(&files, "file", nil, "verify this export or archive file (repeat: oldest first)")
	c.Flags().BoolVar(&thenLive, "then-live", false, "after the files, check that the live log continues them")
	return c
}

func (a *app) verifyFile(ctx context.Context, ver *logio.Verifier, path string) (logio.Header, error) {
	bulkGC()
	f, err := os.Open(path)
	if err != nil {
		return logio.Header{}, errors.Wrap(err, "verify")
	}
	defer f.Close()
	p, done := a.progress("verify " + filepath.Base(path))
	ver.Progress = p
	h, err := ver.File(ctx, f)
	done()
	return h, err
}

func (a *app) logImportCommand() *cobra.Command {
	var force, yes bool
	var ignoreLive []string
	c := &cobra.Command{
		Use:   "import FILE",
		Short: "Load an export into an etcd that holds no Coil log (refused while a coild is alive)",
		Long: `Load an export file (coilctl log export) into etcd under --etcd-prefix. The whole
file is verified before anything is written (a file that does not verify: exit 1, nothing
written). Refused (exit 4) when etcd already holds events, heads or snapshot pointers
under the prefix, unless --force, which deletes them once the file verified (liveness keys
are kept). --force asks for confirmation on a terminal; in scripts add --yes.

Refused (exit 4) while any node's liveness key exists (<prefix>alive/NODE: a coild is
running, or stopped less than its lease TTL ago): a coild would keep writing to the log
being replaced and fail every ADD afterwards. Stop every coild first. A stopped coild's
key goes when its lease expires (the message says how long); if you cannot wait, name
the nodes whose coild you stopped with --ignore-live-nodes. A coild that starts during
the import stops it before anything is deleted (exit 4).
Events keep their bytes and hashes; they get new etcd revisions.`,
		Example: `  coilctl log import /backup/coil-20300102T030000Z.jsonl
  coilctl log import --force --yes /backup/coil-20300102T030000Z.jsonl
  coilctl log import --force --ignore-live-nodes n1,n2 /backup/coil.jsonl`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			if force {
				if err := a.needConfirm(cmd, yes, "replace the Coil log etcd holds (--force)"); err != nil {
					return err
				}
			}
			for _, n := range ignoreLive {
				if err := validName("--ignore-live-nodes", n); err != nil {
					return err
				}
			}
			lg, err := a.rawLog()
			if err != nil {
				return err
			}
			defer lg.Close()
			vp, vdone := a.progress("verify")
			wp, wdone := a.progress("import")
			confirm := func(p logio.ImportPlan) error {
				plan := fmt.Sprintf("etcd holds a Coil log under %s: %d events of %d streams (%d snapshot pointers).\n"+
					"--force deletes it, and its attachment index, and loads %s: %d events of %d streams, exported at revision %d on %s.\n"+
					"Addresses assigned since that export are forgotten.",
					p.Prefix, p.Events, p.Streams, p.Snapshots, args[0], p.File.Total(), len(p.File.Streams), p.File.Revision, p.File.Created)
				return a.confirm(cmd.Context(), yes, plan, "the log etcd holds was kept; nothing imported")
			}
			h, err := logio.Import(cmd.Context(), lg, args[0], logio.ImportOptions{Force: force, IgnoreLiveNodes: ignoreLive,
				Confirm: confirm, VerifyProgress: vp, Progress: wp})
			vdone()
			wdone()
			if err != nil {
				return logErr(err)
			}
			if err := a.printLogSummary("imported", args[0], h); err != nil {
				return err
			}
			if c, cerr := a.admin().Cluster(cmd.Context()); cerr == nil {
				a.warnReserved(c.Pools)
			}
			return nil
		}),
	}
	c.Flags().BoolVar(&force, "force", false, "replace the log etcd holds under the prefix (deleted once FILE verified; asks for confirmation)")
	c.Flags().StringSliceVar(&ignoreLive, "ignore-live-nodes", nil,
		"nodes whose liveness key may still exist because you stopped their coild and the key waits for its lease to expire (comma-separated or repeated)")
	yesFlag(c, &yes)
	return c
}

func (a *app) logSnapshotCommand() *cobra.Command {
	var stream string
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Append a Snapshot of each stream's state (or of --stream's)",
		Long: `For every stream (or --stream only): fold it from its newest snapshot and append a
Snapshot event holding its state, which moves the stream's snapshot pointer. Readers
(coild, coilctl) then start there, and 'coilctl log archive' can move the events before
it out of etcd. A stream whose last event is already a snapshot is left alone. Node
streams have a live writer (coild): a conflict with it is retried.`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if err := a.connect(); err != nil {
				return err
			}
			s := events.Stream(stream)
			if stream != "" {
				if err := s.Validate(); err != nil {
					return err
				}
			}
			streams, err := selectStreams(cmd.Context(), a.log, s, "")
			if err != nil {
				return err
			}
			var results []logio.SnapshotResult
			for _, s := range streams {
				r, err := logio.Snapshot(cmd.Context(), a.log, s, a.env.Clock.Now, a.actor())
				if err != nil {
					return err
				}
				results = append(results, r)
			}
			if a.opts.output != "table" {
				return a.printValue(results)
			}
			t := newTable(a.env.Stdout, "STREAM", "SNAPSHOT", "RESULT")
			for _, r := range results {
				what := "written"
				switch {
				case r.Skipped && r.Seq == 0:
					what = "empty"
				case r.Skipped:
					what = "unchanged (last event is a snapshot)"
				case r.Attempts > 1:
					what = fmt.Sprintf("written (after %d conflicts)", r.Attempts-1)
				}
				t.row(string(r.Stream), fmt.Sprintf("#%d", r.Seq), what)
			}
			return t.flush()
		}),
	}
	c.Flags().StringVar(&stream, "stream", "", "only this stream (cluster, pool/NAME or node/NAME)")
	return c
}

func (a *app) logArchiveCommand() *cobra.Command {
	var before, to string
	var yes bool
	c := &cobra.Command{
		Use:   "archive --before TIME|REVISION --to FILE",
		Short: "Move the events before each stream's newest snapshot older than a cut to FILE",
		Long: `For every stream: find its newest snapshot committed before the cut (--before: an
etcd revision, or an RFC 3339 time compared with the events' timestamps), write the
stream's stored events before that snapshot to FILE (JSON Lines, header kind "archive"
with each stream's range), verify FILE, then delete those events from etcd. The snapshot
stays and starts the live log: 'coilctl log verify --file FILE --then-live' checks that
archive and live log form one chain. Take snapshots first (coilctl log snapshot).
Streams without such a snapshot are left alone; with none at all no file is written.
On a terminal coilctl says how many events it will move and asks for confirmation; in
scripts pass --yes (without a terminal and without --yes: exit 2, nothing written).`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			if before == "" || to == "" {
				return usagef("archive needs --before and --to")
			}
			cut, err := logio.ParseCut(before)
			if err != nil {
				return errors.Mark(err, ErrUsage)
			}
			if _, err = os.Stat(to); err == nil {
				return errors.Mark(errors.Newf("%s exists: archive to a new file", to), ErrRefused)
			}
			if err = a.needConfirm(cmd, yes, "delete the archived events from etcd"); err != nil {
				return err
			}
			lg, err := a.rawLog()
			if err != nil {
				return err
			}
			defer lg.Close()
			wp, wdone := a.progress("archive")
			vp, vdone := a.progress("verify")
			dp, ddone := a.progress("delete")
			confirm := func(h logio.Header) error {
				plan := fmt.Sprintf("Archive %d events of %d streams (each stream's events before its newest snapshot older than %s) "+
					"to %s, then delete them from etcd. Keep the file: history before the snapshots needs it (--archive).",
					h.Total(), len(h.Streams), before, to)
				return a.confirm(cmd.Context(), yes, plan, "nothing archived or deleted")
			}
			res, err := logio.Archive(cmd.Context(), lg, to, logio.ArchiveOptions{Cut: cut, Now: a.env.Clock.Now(),
				Progress: wp, VerifyProgress: vp, DeleteProgress: dp, Confirm: confirm})
			wdone()
			vdone()
			ddone()
			if err != nil {
				return err
			}
			file := to
			if len(res.Header.Streams) == 0 {
				file = "(nothing to archive: no snapshot before the cut; no file written)"
			}
			return a.printSummary(logSummary{Action: "archived", File: file, Kind: logio.KindArchive, Revision: res.Header.Revision,
				Events: res.Header.Total(), Deleted: res.Deleted, Streams: res.Header.Streams})
		}),
	}
	c.Flags().StringVar(&before, "before", "", "the cut: an etcd revision or an RFC 3339 time")
	c.Flags().StringVar(&to, "to", "", "the archive file to write (must not exist)")
	yesFlag(c, &yes)
	return c
}

// SnapshotSeq bounds the log's snapshot pointer read by --timeout, like the other calls.
func (l *timeoutLog) SnapshotSeq(ctx context.Context, s events.Stream, rev int64) (uint64, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return l.Log.SnapshotSeq(ctx, s, rev)
}

// selectStreams returns []{s} when s is set (it must hold events: else ErrNotFound), or
// else every stream whose name starts with prefix, sorted: the streams a --stream flag
// narrows a log command to.
func selectStreams(ctx context.Context, lg events.Log, s events.Stream, prefix string) ([]events.Stream, error) {
	if s != "" {
		v, _, err := lg.Head(ctx, s)
		if err != nil {
			return nil, err
		}
		if v.Seq == 0 {
			return nil, errors.Mark(errors.Newf("stream %s has no events", s), ErrNotFound)
		}
		return []events.Stream{s}, nil
	}
	heads, _, err := lg.Streams(ctx, prefix, 0)
	if err != nil {
		what := "streams"
		if prefix != "" {
			what = strings.TrimSuffix(prefix, "/") + " streams"
		}
		return nil, errors.Wrap(err, "list "+what)
	}
	return sortedStreams(heads), nil
}
