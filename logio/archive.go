package logio

import (
	"bufio"
	"context"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
)

var errCutReached = errors.New("logio: cut reached")

// deleteChunk is the number of event keys one archive transaction deletes (one range
// delete: a single operation, so etcd's 128-operation limit does not bind).
const deleteChunk = 1024

// Cut says which events an archive may take: those committed before it.
type Cut struct {
	// Revision: events committed at an etcd revision below it (0: no revision cut).
	Revision int64
	// Time: events stamped before it (zero: no time cut).
	Time time.Time
}

// ParseCut reads a cut: a positive integer is an etcd revision, anything else an RFC 3339
// time.
func ParseCut(s string) (Cut, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return Cut{}, errors.Newf("logio: revision %d: must be positive", n)
		}
		return Cut{Revision: n}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Cut{}, errors.Newf("logio: %q is neither a revision nor an RFC 3339 time", s)
	}
	return Cut{Time: t}, nil
}

func (c Cut) before(e *events.Event) bool {
	if c.Revision > 0 && e.Revision >= c.Revision {
		return false
	}
	if !c.Time.IsZero() && !e.Time.Before(c.Time) {
		return false
	}
	return c.Revision > 0 || !c.Time.IsZero()
}

func (c Cut) String() string {
	if c.Revision > 0 {
		return strconv.FormatInt(c.Revision, 10)
	}
	return c.Time.UTC().Format(time.RFC3339Nano)
}

// ArchiveOptions tune Archive.
type ArchiveOptions struct {
	Cut Cut
	// Now stamps the header's "created"; zero means time.Now().
	Now time.Time
	// Progress, if set, is told the events written, then verified, then deleted.
	Progress, VerifyProgress, DeleteProgress Progress
	// Confirm, if set, is called with the archive's header (each stream's range) once the
	// ranges are known, before the file is written, when there is anything to archive; an
	// error stops the archive with nothing written or deleted (coilctl asks the operator
	// here).
	Confirm func(Header) error
}

// ArchiveResult says what Archive did.
type ArchiveResult struct {
	Header  Header `json:"header"`
	Deleted int64  `json:"deleted"`
}

// Archive moves old events out of etcd into the file at path: for every stream, the
// events before its newest snapshot committed before opt.Cut (from the oldest stored
// one). It writes the file (header kind "archive" with each stream's range) through a
// temporary file, syncs and renames it, verifies it, and only then deletes the archived
// keys from etcd, in transactions that each check the snapshot kept is still stored. The
// snapshot stays, so the live log starts at it and its previous-hash is the archive's
// last hash: `Verifier.File(archive)` then `Verifier.Live` check the join. Streams
// without such a snapshot are left alone; with none at all, no file is written and the
// result's header lists no stream. The attachment-index entries (package logindex) of
// the chunks archived wholly are deleted with the events.
func Archive(ctx context.Context, log events.Store, path string, opt ArchiveOptions) (ArchiveResult, error) {
	if opt.Cut.Revision <= 0 && opt.Cut.Time.IsZero() {
		return ArchiveResult{}, errors.New("logio: archive needs a cut (revision or time)")
	}
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		return ArchiveResult{}, errors.Wrap(err, "list streams")
	}
	h := newHeader(KindArchive, log.Prefix(), rev, opt.Now)
	h.Before = opt.Cut.String()
	keep := map[events.Stream]int64{} // the snapshot kept: its ModRevision
	for _, s := range sortedStreams(heads) {
		first, snap, snapRev, aerr := archiveRange(ctx, log, s, rev, opt.Cut)
		if aerr != nil {
			return ArchiveResult{}, aerr
		}
		if snap <= first {
			continue
		}
		h.Streams[s] = StreamRange{First: first, Last: snap - 1}
		keep[s] = snapRev
	}
	res := ArchiveResult{Header: h}
	if len(h.Streams) == 0 {
		return res, nil
	}
	if opt.Confirm != nil {
		if err = opt.Confirm(h); err != nil {
			return res, err
		}
	}
	// The last hash of each range is the kept snapshot's previous-hash: read while writing.
	if err = writeArchive(ctx, log, path, &h, rev, opt.Progress); err != nil {
		return res, err
	}
	res.Header = h
	f, err := os.Open(path)
	if err != nil {
		return res, errors.Wrap(err, "logio: archive: reopen")
	}
	ver := NewVerifier()
	ver.Progress = opt.VerifyProgress
	_, err = ver.File(ctx, f)
	_ = f.Close()
	if err != nil {
		return res, errors.Wrapf(err, "the archive written to %s does not verify; nothing deleted", path)
	}
	total := h.Total()
	for _, s := range h.SortedStreams() {
		r := h.Streams[s]
		for lo := r.First; lo <= r.Last; lo += deleteChunk {
			hi := min(lo+deleteChunk, r.Last+1)
			n, err := log.Trim(ctx, s, lo, hi, r.Last+1, keep[s])
			if errors.Is(err, events.ErrConflict) {
				return res, errors.Newf("logio: archive: %s #%d (the snapshot kept) changed during the archive; %d events deleted", s, r.Last+1, res.Deleted)
			}
			if err != nil {
				return res, errors.Wrapf(err, "logio: archive: delete %s #%d-#%d (the file holds them)", s, lo, hi-1)
			}
			res.Deleted += n
			opt.DeleteProgress.report(res.Deleted, total)
		}
		// The attachment-index entries of the chunks archived wholly describe events no
		// longer stored (readers ignore them anyway).
		if _, err := logindex.DeleteThrough(ctx, log, s, r.Last); err != nil {
			return res, errors.Wrapf(err, "logio: archive: %s archived; delete its index entries", s)
		}
	}
	return res, nil
}

// archiveRange finds, for stream s at rev, the oldest stored event and the newest
// snapshot committed before the cut (0 if none), with that snapshot's ModRevision.
func archiveRange(ctx context.Context, log events.Store, s events.Stream, rev int64, cut Cut) (first, snap uint64, snapRev int64, err error) {
	ptr, _, err := log.SnapshotSeq(ctx, s, rev)
	if err != nil || ptr == 0 {
		return 0, 0, 0, errors.Wrapf(err, "snapshot pointer of %s", s)
	}
	first, _, err = log.OldestStored(ctx, s, rev)
	if err != nil {
		return 0, 0, 0, errors.Wrapf(err, "oldest event of %s", s)
	}
	if ptr <= first {
		return first, 0, 0, nil
	}
	// The newest snapshot qualifies most of the time.
	var pe *events.Event
	if _, err = log.Read(ctx, s, ptr, rev, func(e *events.Event) error { pe = e; return errStop }); err != nil && !errors.Is(err, errStop) {
		return 0, 0, 0, errors.Wrapf(err, "read %s #%d", s, ptr)
	}
	if pe != nil && cut.before(pe) {
		return first, ptr, pe.Revision, nil
	}
	// Otherwise scan from the oldest stored event up to the cut.
	err = readRange(ctx, log, s, first, ptr-1, rev, func(e *events.Event) error {
		if !cut.before(e) {
			return errCutReached
		}
		if _, ok := e.Payload.(*events.Snapshot); ok && e.Seq > first {
			snap, snapRev = e.Seq, e.Revision
		}
		return nil
	})
	if err != nil && !errors.Is(err, errCutReached) {
		return 0, 0, 0, err
	}
	return first, snap, snapRev, nil
}

// writeArchive writes the archive (WriteFileAtomic), filling in each range's last hash.
func writeArchive(ctx context.Context, log events.Store, path string, h *Header, rev int64, p Progress) error {
	// Each range's last hash is needed in the header before the events: it is the kept
	// snapshot's previous-hash.
	for s, r := range h.Streams {
		var snap *events.Event
		if _, err := log.Read(ctx, s, r.Last+1, rev, func(e *events.Event) error { snap = e; return errStop }); err != nil && !errors.Is(err, errStop) {
			return errors.Wrapf(err, "read %s #%d", s, r.Last+1)
		}
		if snap == nil {
			return errors.Newf("logio: archive: %s #%d vanished", s, r.Last+1)
		}
		r.LastHash = snap.Prev
		h.Streams[s] = r
	}
	return WriteFileAtomic(path, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		if err := writeHeader(bw, h); err != nil {
			return err
		}
		ew := newEventWriter(bw, p, h.Total())
		var err error
		for _, s := range h.SortedStreams() {
			r := h.Streams[s]
			if err = readRange(ctx, log, s, r.First, r.Last, rev, ew.write); err != nil {
				break
			}
		}
		if cerr := ew.close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		return errors.Wrap(bw.Flush(), "logio: archive: write")
	})
}
