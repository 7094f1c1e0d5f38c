package logio

import (
	"context"
	"os"
	"sort"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// ErrArchiveGap: the archive files given and the live log leave some events of a stream
// in neither (an archive is missing). Errors matching it also match ErrBroken when the
// files disagree with each other or with the live log.
var ErrArchiveGap = errors.New("logio: events missing from the archives given")

// Archives is what ReadArchives read: the files, in chain order, and each stream's
// range across them. Its methods check that the live log continues the archives.
type Archives struct {
	// Files are the files read, in the order they chain.
	Files []ArchiveFile

	ver   *Verifier
	first map[events.Stream]uint64 // each stream's lowest archived sequence
}

// ArchiveFile is one file of Archives.
type ArchiveFile struct {
	Path   string
	Header Header
}

// ReadArchives reads the archive (or export) files at paths, given in any order (the
// files of successive `coilctl log archive` runs): it orders them by the etcd revision
// each was written at, verifies each as Verifier.File does (a corrupt file, or one of an
// unknown format version, fails with the same errors, prefixed with its path) and all of
// them as one chain per stream: a stream's events in a later file must continue those of
// the earlier ones (an overlap must agree where it ends). It calls fn, on the caller's
// goroutine, with every event once, as soon as it verified: file after file, within a
// file stream after stream, each stream in sequence order (events of an overlap are
// delivered once). Nothing is kept in memory but each stream's last version. fn's error
// stops the read and is returned as is. With no path it returns empty Archives.
func ReadArchives(ctx context.Context, paths []string, fn func(*events.Event) error) (*Archives, error) {
	a := &Archives{ver: NewVerifier(), first: map[events.Stream]uint64{}}
	for _, p := range paths {
		h, err := readHeaderOf(p)
		if err != nil {
			return nil, err
		}
		a.Files = append(a.Files, ArchiveFile{Path: p, Header: h})
	}
	sort.SliceStable(a.Files, func(i, j int) bool {
		hi, hj := &a.Files[i].Header, &a.Files[j].Header
		if hi.Revision != hj.Revision {
			return hi.Revision < hj.Revision
		}
		return hi.Created < hj.Created
	})
	delivered := map[events.Stream]uint64{}
	for _, af := range a.Files {
		for s, r := range af.Header.Streams {
			known := a.ver.known[s]
			if known.Seq > 0 && r.Last < known.Seq {
				return nil, errors.Wrapf(brokenf(s, r.Last, "the file holds #%d-#%d, an earlier file (by revision) already ends at #%d: pass each archive once", r.First, r.Last, known.Seq), "archive %s", af.Path)
			}
			if f, ok := a.first[s]; !ok || r.First < f {
				a.first[s] = r.First
			}
		}
		if err := a.readFile(ctx, af.Path, delivered, fn); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func readHeaderOf(path string) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, errors.Wrap(err, "archive")
	}
	defer f.Close()
	h, err := readHeader(newLineReader(f))
	return h, errors.Wrapf(err, "archive %s", path)
}

func (a *Archives) readFile(ctx context.Context, path string, delivered map[events.Stream]uint64, fn func(*events.Event) error) error {
	f, err := os.Open(path)
	if err != nil {
		return errors.Wrap(err, "archive")
	}
	defer f.Close()
	var fnErr error
	_, err = a.ver.file(ctx, f, nil, func(e *events.Event, _ []byte) error {
		if e.Seq <= delivered[e.Stream] {
			return nil
		}
		delivered[e.Stream] = e.Seq
		fnErr = fn(e)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	return errors.Wrapf(err, "archive %s", path)
}

// Streams lists the streams the archives hold, with their last version.
func (a *Archives) Streams() map[events.Stream]events.Version { return a.ver.Known() }

// Last returns the last archived version of stream s (zero: no archive holds s).
func (a *Archives) Last(s events.Stream) events.Version {
	if a == nil {
		return events.Version{}
	}
	return a.ver.known[s]
}

// CheckFrom checks that the archives hold stream s from its first event (#1), as a reader
// of the whole history needs; an error matching ErrArchiveGap names the events missing
// and says what to pass.
func (a *Archives) CheckFrom(s events.Stream) error {
	if first := a.first[s]; first > 1 {
		return errors.Mark(errors.Newf("%s: events #1-#%d are in none of the archives given (they hold #%d-#%d); pass the archive of the earlier 'coilctl log archive' run too (--archive FILE)",
			s, first-1, first, a.ver.known[s].Seq), ErrArchiveGap)
	}
	return nil
}

// Join checks that next, the live log's event of stream s that follows the archives'
// last one (#Last+1), continues their chain (its sequence and previous-hash); the
// error matches ErrBroken and names the stream and sequence.
func (a *Archives) Join(next *events.Event) error {
	c := a.ver.begin(next.Stream)
	if err := c.next(next); err != nil {
		return errors.Wrap(err, "the live log does not continue the archives given (an archive of another log?)")
	}
	return nil
}

// JoinHead checks the case where the live stream s has no event after the archives':
// its head (head, read at one revision) must be the archives' last event, else the
// archives run past the live log (they are of another log).
func (a *Archives) JoinHead(s events.Stream, head events.Version) error {
	last := a.ver.known[s]
	switch {
	case head.Seq == 0:
		return brokenf(s, last.Seq, "the archives given hold #1-#%d but the live log has no such stream (an archive of another log?)", last.Seq)
	case head.Seq < last.Seq:
		return brokenf(s, head.Seq+1, "the archives given hold up to #%d but the live log's head is #%d (an archive of another log?)", last.Seq, head.Seq)
	case head.Seq == last.Seq && head.Hash != last.Hash:
		return brokenf(s, head.Seq, "the live head's hash %s differs from the archives' %s (an archive of another log?)", head.Hash, last.Hash)
	}
	return nil
}

// Gap is the error for a live stream s whose events after the archives' last (#Last+1)
// are not stored either (err: the live log's ErrCompacted): a later archive is missing.
func (a *Archives) Gap(s events.Stream, err error) error {
	last := a.ver.known[s]
	return errors.Mark(errors.Newf("%s: the archives given end at #%d and the live log does not hold #%d (%v); pass the archive of the later 'coilctl log archive' run too (--archive FILE)",
		s, last.Seq, last.Seq+1, err), ErrArchiveGap)
}
