package daemon

import (
	"context"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
)

// indexRetry is how long the index builder waits after a failure before trying again
// (a new chunk boundary also retries).
const indexRetry = time.Minute

// indexer is the state of the background builder of the node stream's attachment-index
// entries (package logindex).
type indexer struct {
	req   chan struct{} // a request to build (capacity 1: requests coalesce)
	chunk uint64        // chunk size; logindex.DefaultChunkSize
}

func newIndexer() indexer {
	return indexer{req: make(chan struct{}, 1), chunk: logindex.DefaultChunkSize}
}

// requestIndex asks indexLoop to build the missing entries; it never blocks.
func (d *Daemon) requestIndex() { wake(d.index.req) }

// noteIndex asks for a build when e, an event of the node's own stream, completes a chunk.
// The session loop calls it for every watched event (coild's own appends come back
// through the watch), never the CNI path.
func (d *Daemon) noteIndex(e *events.Event) {
	if e.Seq%d.index.chunk == 0 && e.Stream == events.NodeStream(d.cfg.Node) {
		d.requestIndex()
	}
}

// indexLoop builds the node stream's missing attachment-index entries whenever asked
// (after each session's replay, and when the stream passes a chunk boundary), until ctx
// ends. A failure is logged and retried after indexRetry or at the next request. Entries
// are derived data: a missing one only makes `coilctl history --pod/--container` read
// that chunk.
func (d *Daemon) indexLoop(ctx context.Context) {
	stream := events.NodeStream(d.cfg.Node)
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.index.req:
		case <-retry:
		}
		retry = nil
		start := time.Now()
		res, err := logindex.Build(ctx, d.elog, stream, logindex.BuildOptions{ChunkSize: int(d.index.chunk)})
		d.metrics.indexChunks.Add(float64(res.Written))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			d.log.Warn("attachment index: build failed; retrying later", "stream", stream, "written", res.Written, "retry_in", indexRetry, "err", err)
			retry = time.After(indexRetry)
		case res.Written > 0:
			d.log.Info("attachment index entries written", "stream", stream, "written", res.Written, "present", res.Present,
				"head", res.Head, "took", time.Since(start).Round(time.Millisecond))
		}
	}
}
