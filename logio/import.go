package logio

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// DefaultWriters is how many transactions Import keeps in flight.
const DefaultWriters = 16

// ErrLiveNodes: a node's liveness key exists (its coild runs, or stopped less than its
// lease's TTL ago), so the log must not be replaced under it.
var ErrLiveNodes = errors.New("logio: nodes are alive")

// ImportOptions tune Import.
type ImportOptions struct {
	// Force imports into an etcd that holds a Coil log: the log's keys (events, heads,
	// snapshot pointers under the prefix) and the attachment index are deleted first.
	// Liveness keys are kept.
	Force bool
	// IgnoreLiveNodes names nodes whose liveness key may exist during the import: the
	// operator states that their coild is stopped and the key only waits for its lease to
	// expire. Any other live node refuses the import (ErrLiveNodes).
	IgnoreLiveNodes []string
	// Confirm, if set, is called when Force is about to replace a log etcd holds, once the
	// file's header is read and before anything is deleted; an error stops the import with
	// nothing written (coilctl asks the operator here).
	Confirm func(ImportPlan) error
	// Writers is the number of transactions in flight (0: DefaultWriters).
	Writers int
	// VerifyProgress and Progress, if set, are told the events verified (first pass)
	// and written (second pass).
	VerifyProgress, Progress Progress
}

// ImportPlan is what a forced import is about to replace: the keys of the log etcd holds
// under Prefix, and the header of the file that replaces it.
type ImportPlan struct {
	Prefix string
	// Events, Streams and Snapshots count the log's keys under the prefix: events, heads,
	// snapshot pointers.
	Events, Streams, Snapshots int64
	File                       Header
}

// Import loads an export file into the log's etcd under the log's prefix. It refuses
// (ErrNotEmpty) when etcd holds any event, head or snapshot pointer under the prefix,
// unless opt.Force (which deletes them once the file verified), and refuses (ErrLiveNodes)
// while any node's liveness key exists (a coild would keep appending to the log being
// replaced, and would not notice its streams changing under it), except the nodes named
// in opt.IgnoreLiveNodes. The writes are conditioned on no coild starting meanwhile
// (events.BulkGuard). It verifies the whole file first (ErrBroken, ErrFormat: nothing is
// written), keeping each event's stored bytes (the canonical encoding of the JSON event,
// whose hash the file carries) in a spool file in the temporary directory ($TMPDIR; about
// 300 bytes per event, removed on return); then it writes them in transactions of up to 127 puts, several in flight,
// and finally every stream's head and snapshot pointer (in transactions that check no
// head appeared meanwhile). The events get new etcd revisions (in import order); the
// file keeps the original ones.
//
// Import writes no attachment index (package logindex): entries left under the prefix
// (with Force, or in an otherwise empty etcd) are deleted before the events are written;
// coild and `coilctl log index` build the index again.
//
// A failure while writing leaves a partial log without heads; run Import again with
// Force. Archive files cannot be imported (their events are history, not state).
func Import(ctx context.Context, log events.Store, path string, opt ImportOptions) (Header, error) {
	// Refuse early (before reading the file), but delete only once the file verified.
	cnt, err := log.Count(ctx, 0)
	if err != nil {
		return Header{}, errors.Mark(errors.Wrap(err, "logio: import: is the log empty?"), events.ErrUnavailable)
	}
	plan := ImportPlan{Prefix: log.Prefix(), Events: cnt.Events, Streams: cnt.Streams, Snapshots: cnt.Snapshots}
	if plan.total() > 0 && !opt.Force {
		return Header{}, errors.Wrapf(ErrNotEmpty, "%d keys under %s (log/, head/, snap/); import needs an empty etcd (or --force, which deletes them)", plan.total(), log.Prefix())
	}
	liveRev, err := checkLive(ctx, log, opt.IgnoreLiveNodes)
	if err != nil {
		return Header{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return Header{}, errors.Wrap(err, "logio: import")
	}
	defer f.Close()
	spool, err := os.CreateTemp("", "coil-import-*.spool")
	if err != nil {
		return Header{}, errors.Wrap(err, "logio: import: spool")
	}
	defer func() { _ = spool.Close(); _ = os.Remove(spool.Name()) }()
	sw := bufio.NewWriterSize(spool, 1<<20)
	var rec []byte
	ver := NewVerifier()
	ver.Progress = opt.VerifyProgress
	h, err := ver.file(ctx, f, func(h *Header) error {
		if h.Kind != KindExport {
			return errors.Wrapf(ErrFormat, "%s is an %s, not an export: import the export of the live log", path, h.Kind)
		}
		if plan.total() > 0 && opt.Confirm != nil {
			plan.File = *h
			return opt.Confirm(plan)
		}
		return nil
	}, func(e *events.Event, v []byte) error {
		rec = binary.AppendUvarint(rec[:0], uint64(len(e.Stream)))
		rec = append(rec, e.Stream...)
		rec = binary.AppendUvarint(rec, e.Seq)
		rec = binary.AppendUvarint(rec, uint64(len(v)))
		rec = append(rec, v...)
		_, werr := sw.Write(rec)
		return errors.Wrap(werr, "logio: import: spool")
	})
	if err != nil {
		return h, err
	}
	if err = sw.Flush(); err != nil {
		return h, errors.Wrap(err, "logio: import: spool")
	}
	noneStarted := events.BulkGuard{NoNodeStartedAfter: liveRev}
	// The attachment index (logindex) is derived from the log: it neither makes etcd
	// "not empty" nor survives an import (it would describe another log). Without
	// Force the log was empty when counted; a log that appeared since is refused by
	// InitHeads.
	if err = log.Clear(ctx, opt.Force, noneStarted); err != nil {
		if errors.Is(err, events.ErrNodeStarted) {
			return h, startedSince(ctx, log, liveRev, "nothing was deleted")
		}
		return h, errors.Wrap(err, "logio: import: delete the existing log and its attachment index")
	}
	if _, err = spool.Seek(0, io.SeekStart); err != nil {
		return h, errors.Wrap(err, "logio: import: spool")
	}
	n, err := writeSpool(ctx, log, bufio.NewReaderSize(spool, 1<<20), h.Total(), opt)
	if err != nil {
		return h, err
	}
	if n != h.Total() {
		return h, errors.Newf("logio: import: spooled %d events, the file holds %d", n, h.Total())
	}
	if err := writeHeads(ctx, log, &h, noneStarted); err != nil {
		return h, err
	}
	opt.Progress.report(n, h.Total())
	return h, nil
}

// checkLive refuses (ErrLiveNodes) while a node other than those ignored holds its
// liveness key, and returns the revision it read at (the import's writes are conditioned
// on no node starting after it).
func checkLive(ctx context.Context, log events.Store, ignore []string) (int64, error) {
	live, rev, err := log.LiveNodes(ctx, true)
	if err != nil {
		return 0, errors.Wrap(err, "logio: import: is any coild running?")
	}
	skip := map[string]bool{}
	for _, n := range ignore {
		skip[n] = true
	}
	var alive []string
	for _, n := range live {
		if skip[n.Node] {
			continue
		}
		left := "its lease has expired"
		if n.TTL > 0 {
			left = fmt.Sprintf("%ds left", n.TTL)
		}
		alive = append(alive, fmt.Sprintf("%s (lease %x, %s)", n.Node, n.Lease, left))
	}
	if len(alive) > 0 {
		return 0, errors.Wrapf(ErrLiveNodes, "%d nodes hold their liveness key under %s: %s; a coild there would keep writing "+
			"to the log being replaced: stop every coild first (a stopped coild's key goes when its lease expires), "+
			"or name the nodes whose coild is stopped with --ignore-live-nodes",
			len(alive), events.AliveKey(log.Prefix(), ""), strings.Join(alive, ", "))
	}
	return rev, nil
}

// startedSince explains a failed BulkGuard: the nodes whose liveness
// key was created after rev.
func startedSince(ctx context.Context, log events.Store, rev int64, what string) error {
	live, _, err := log.LiveNodes(ctx, false)
	if err != nil {
		return errors.Wrapf(ErrLiveNodes, "a coild started during the import (%s); %v", what, err)
	}
	var names []string
	for _, n := range live {
		if n.Created > rev {
			names = append(names, n.Node)
		}
	}
	return errors.Wrapf(ErrLiveNodes, "a coild started during the import (%s: %s); stop every coild and import again", what, strings.Join(names, ", "))
}

// writeSpool puts the spooled events, several transactions in flight.
func writeSpool(ctx context.Context, log events.Store, r *bufio.Reader, total int64, opt ImportOptions) (int64, error) {
	writers := opt.Writers
	if writers <= 0 {
		writers = DefaultWriters
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	txns := make(chan []events.StoredEvent, writers)
	var wg sync.WaitGroup
	var once sync.Once
	var writeErr error
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ops := range txns {
				if err := log.PutEvents(ctx, ops); err != nil {
					once.Do(func() { writeErr = errors.Wrap(err, "logio: import: write events"); cancel() })
				}
			}
		}()
	}
	var done int64
	batch := make([]events.StoredEvent, 0, events.MaxBatch)
	send := func() bool {
		select {
		case txns <- batch:
			batch = make([]events.StoredEvent, 0, events.MaxBatch)
			return true
		case <-ctx.Done():
			return false
		}
	}
	var rerr error
	for {
		s, seq, v, err := readSpool(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rerr = err
			break
		}
		batch = append(batch, events.StoredEvent{Stream: events.Stream(s), Seq: seq, Value: v})
		done++
		if len(batch) == events.MaxBatch && !send() {
			break
		}
		if done%progressEvery == 0 {
			opt.Progress.report(done, total)
		}
	}
	if rerr == nil && len(batch) > 0 {
		send()
	}
	close(txns)
	wg.Wait()
	if writeErr != nil {
		return done, writeErr
	}
	if rerr != nil {
		return done, rerr
	}
	return done, ctx.Err()
}

func readSpool(r *bufio.Reader) (stream string, seq uint64, value []byte, err error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return "", 0, nil, io.EOF
		}
		return "", 0, nil, errors.Wrap(err, "logio: import: spool")
	}
	b := make([]byte, n)
	if _, err = io.ReadFull(r, b); err != nil {
		return "", 0, nil, errors.Wrap(err, "logio: import: spool")
	}
	if seq, err = binary.ReadUvarint(r); err != nil {
		return "", 0, nil, errors.Wrap(err, "logio: import: spool")
	}
	if n, err = binary.ReadUvarint(r); err != nil {
		return "", 0, nil, errors.Wrap(err, "logio: import: spool")
	}
	v := make([]byte, n)
	if _, err := io.ReadFull(r, v); err != nil {
		return "", 0, nil, errors.Wrap(err, "logio: import: spool")
	}
	return string(b), seq, v, nil
}

func (p ImportPlan) total() int64 { return p.Events + p.Streams + p.Snapshots }

// writeHeads writes every stream's head and snapshot pointer, checking that no head
// exists yet (a coild writing meanwhile would be overwritten) and g (no coild started
// since LiveNodes was read).
func writeHeads(ctx context.Context, log events.Store, h *Header, g events.BulkGuard) error {
	heads := make([]events.StreamInit, 0, len(h.Streams))
	for _, s := range h.SortedStreams() {
		r := h.Streams[s]
		in := events.StreamInit{Stream: s, Head: events.Version{Seq: r.Last, Hash: r.LastHash}}
		if r.Snapshot >= r.First && r.Snapshot <= r.Last && r.Snapshot > 0 {
			in.Snapshot = r.Snapshot
		}
		heads = append(heads, in)
	}
	err := log.InitHeads(ctx, heads, g)
	switch {
	case errors.Is(err, events.ErrNodeStarted):
		return startedSince(ctx, log, g.NoNodeStartedAfter, "events written without heads: import again with --force")
	case errors.Is(err, events.ErrConflict):
		return errors.Wrap(ErrNotEmpty, "a stream's head appeared during the import (is a coild running?)")
	}
	return errors.Wrap(err, "logio: import: write heads")
}
