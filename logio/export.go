package logio

import (
	"bufio"
	"context"
	"io"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// ExportOptions tune Export.
type ExportOptions struct {
	// Now stamps the header's "created"; zero means time.Now().
	Now time.Time
	// Progress, if set, is told the events written.
	Progress Progress
}

// Export writes the whole live log to w at one revision: the header, then every stream
// from its oldest stored event to its head, stream by stream in name order, one event per
// line. Events are read in chunks (Store.Read), decoded and chain-checked on the way,
// so memory stays flat and a broken log fails the export (ErrBroken). It returns the
// header written.
func Export(ctx context.Context, log events.Store, w io.Writer, opt ExportOptions) (Header, error) {
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		return Header{}, errors.Wrap(err, "list streams")
	}
	h := newHeader(KindExport, log.Prefix(), rev, opt.Now)
	for s, v := range heads {
		first, _, err := log.OldestStored(ctx, s, rev)
		if err != nil {
			return Header{}, errors.Wrapf(err, "oldest event of %s", s)
		}
		snap, _, err := log.SnapshotSeq(ctx, s, rev)
		if err != nil {
			return Header{}, errors.Wrapf(err, "snapshot pointer of %s", s)
		}
		if first == 0 {
			return Header{}, brokenf(s, v.Seq, "the head names #%d but no event of the stream is stored", v.Seq)
		}
		h.Streams[s] = StreamRange{First: first, Last: v.Seq, LastHash: v.Hash, Snapshot: snap}
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := writeHeader(bw, &h); err != nil {
		return h, err
	}
	ew := newEventWriter(bw, opt.Progress, h.Total())
	for _, s := range h.SortedStreams() {
		r := h.Streams[s]
		if err := readRange(ctx, log, s, r.First, r.Last, rev, ew.write); err != nil {
			_ = ew.close()
			return h, err
		}
	}
	if err := ew.close(); err != nil {
		return h, err
	}
	return h, errors.Wrap(bw.Flush(), "logio: write")
}

// readRange reads events first..last of s at rev, mapping a broken log to ErrBroken.
func readRange(ctx context.Context, log events.Store, s events.Stream, first, last uint64, rev int64, fn func(*events.Event) error) error {
	next := first
	_, err := log.Read(ctx, s, first, rev, func(e *events.Event) error {
		if e.Seq > last {
			return errStop
		}
		if e.Seq == first && first > 1 {
			if _, ok := e.Payload.(*events.Snapshot); !ok {
				return brokenf(s, e.Seq, "the oldest stored event is %s, not a snapshot", e.Type())
			}
		}
		next = e.Seq + 1
		return fn(e)
	})
	switch {
	case err == nil, errors.Is(err, errStop):
		if next != last+1 {
			return brokenf(s, next, "read ended at #%d, want #%d", next-1, last)
		}
		return nil
	case errors.Is(err, ErrBroken):
		return err
	case errors.Is(err, events.ErrChainBroken), errors.Is(err, events.ErrCorrupt), errors.Is(err, events.ErrCompacted),
		errors.Is(err, events.ErrUnknownType), errors.Is(err, events.ErrFutureSchema):
		return broken(s, next, err)
	}
	return errors.Wrapf(err, "read %s at revision %d", s, rev)
}

var errStop = errors.New("logio: stop")
