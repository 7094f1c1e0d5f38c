package cli

import (
	"context"
	"fmt"
	"strconv"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
	"github.com/coil-net/coil/readside"
)

// indexSummary is the -o json|yaml form of `log index`.
type indexSummary struct {
	// Deleted counts the entries --rebuild deleted first.
	Deleted int64                  `json:"deleted"`
	Written int                    `json:"written"`
	Present int                    `json:"present"`
	Streams []logindex.BuildResult `json:"streams"`
}

func (a *app) logIndexCommand() *cobra.Command {
	var stream string
	var rebuild bool
	c := &cobra.Command{
		Use:   "index [--stream node/NAME] [--rebuild]",
		Short: "Build the attachment index of the node streams (derived data: history and events --pod/--container use it)",
		Long: `Write the attachment-index entries that are missing for every node stream (or
--stream's): one per complete chunk of 1024 events, a Bloom filter of the pods and
containers the chunk's events mention. 'coilctl history' and 'coilctl events' with
--pod/--container read only the chunks that may mention what they look for. coild builds its own stream's entries
in the background; this command catches up after an import or rebuilds.

The index is derived data: not part of the hash chain, never exported, safe to delete
and rebuild at any time. Building is idempotent (an entry is written only where none
exists); --rebuild deletes the entries first (all of them, or --stream's) and writes
them again. Chunks whose events were archived are skipped.`,
		Example: `  coilctl log index
  coilctl log index --stream node/n1 --rebuild -o json`,
		Args: cobra.NoArgs,
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			lg, err := a.rawLog()
			if err != nil {
				return err
			}
			defer lg.Close()
			ctx := cmd.Context()
			s := events.Stream(stream)
			if stream != "" {
				if verr := s.Validate(); verr != nil {
					return usagef("--stream %q: %v", stream, verr)
				}
				if kind, _ := s.Kind(); kind != "node" {
					return usagef("--stream %q: only node streams are indexed", stream)
				}
			}
			streams, err := selectStreams(ctx, lg, s, "node/")
			if err != nil {
				return err
			}
			var sum indexSummary
			if rebuild {
				var del events.Stream // "": the whole index
				if stream != "" {
					del = streams[0]
				}
				if sum.Deleted, err = logindex.Delete(ctx, lg, del); err != nil {
					return err
				}
			}
			sum.Streams = make([]logindex.BuildResult, len(streams))
			err = readside.Parallel(ctx, 0, len(streams), func(ctx context.Context, i int) error {
				r, berr := logindex.Build(ctx, lg, streams[i], logindex.BuildOptions{})
				sum.Streams[i] = r
				return berr
			})
			if err != nil {
				return err
			}
			for _, r := range sum.Streams {
				sum.Written += r.Written
				sum.Present += r.Present
			}
			if a.opts.output != "table" {
				return a.printValue(sum)
			}
			t := newTable(a.env.Stdout, "STREAM", "HEAD", "CHUNKS", "WRITTEN", "PRESENT", "ARCHIVED")
			for _, r := range sum.Streams {
				t.row(string(r.Stream), fmt.Sprintf("#%d", r.Head), strconv.Itoa(r.Chunks), strconv.Itoa(r.Written),
					strconv.Itoa(r.Present), strconv.Itoa(r.Archived))
			}
			if ferr := t.flush(); ferr != nil {
				return ferr
			}
			extra := ""
			if rebuild {
				extra = fmt.Sprintf(" (%d deleted first)", sum.Deleted)
			}
			_, err = fmt.Fprintf(a.env.Stdout, "%d entries written, %d present, %d node streams%s\n", sum.Written, sum.Present, len(streams), extra)
			return errors.Wrap(err, "write output")
		}),
	}
	c.Flags().StringVar(&stream, "stream", "", "only this node stream (node/NAME)")
	c.Flags().BoolVar(&rebuild, "rebuild", false, "delete the entries (all, or --stream's) and write them again")
	return c
}
