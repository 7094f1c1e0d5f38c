package logio

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// FormatVersion is the version of the file format this build writes and reads.
const FormatVersion = 1

// Kinds of files.
const (
	KindExport  = "export"
	KindArchive = "archive"
)

// MaxLine is the longest line a file may hold (a Snapshot event of a big node).
const MaxLine = 64 << 20

// Sentinel errors. Check them with errors.Is.
var (
	// ErrBroken: the log or file does not verify (hash chain, gap, head, tampered event).
	ErrBroken = errors.New("logio: log does not verify")
	// ErrFormat: a file that is not a Coil log export of a version this build reads.
	ErrFormat = errors.New("logio: not a Coil log export")
	// ErrNotEmpty: import into an etcd that already holds a Coil log.
	ErrNotEmpty = errors.New("logio: etcd already holds a Coil log")
)

// Header is a file's first line.
type Header struct {
	// Version is FormatVersion ("coilLogExport" in JSON: the key tells what the file is).
	Version  int    `json:"coilLogExport"`
	Kind     string `json:"kind"`
	Prefix   string `json:"prefix"`
	Revision int64  `json:"revision"`
	Created  string `json:"created"`
	// Before is an archive's cut, as given (a revision or an RFC 3339 time).
	Before  string                        `json:"before,omitempty"`
	Streams map[events.Stream]StreamRange `json:"streams"`
}

// StreamRange is what a file holds of a stream: events First..Last (Last's hash).
type StreamRange struct {
	First    uint64      `json:"first"`
	Last     uint64      `json:"last"`
	LastHash events.Hash `json:"lastHash"`
	// Snapshot is the stream's snapshot pointer when it was exported (0: none).
	Snapshot uint64 `json:"snapshot,omitempty"`
}

// Count is the number of events in the range.
func (r StreamRange) Count() int64 {
	if r.Last < r.First || r.First == 0 {
		return 0
	}
	return int64(r.Last - r.First + 1)
}

// Total is the number of events the file holds.
func (h *Header) Total() int64 {
	var n int64
	for _, r := range h.Streams {
		n += r.Count()
	}
	return n
}

// SortedStreams lists the header's streams in file order (by name).
func (h *Header) SortedStreams() []events.Stream {
	out := make([]events.Stream, 0, len(h.Streams))
	for s := range h.Streams {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// newHeader is the header of a file of kind written at now (zero: time.Now()).
func newHeader(kind, prefix string, rev int64, now time.Time) Header {
	if now.IsZero() {
		now = time.Now()
	}
	return Header{Version: FormatVersion, Kind: kind, Prefix: prefix, Revision: rev,
		Created: now.UTC().Format(time.RFC3339Nano), Streams: map[events.Stream]StreamRange{}}
}

func writeHeader(w io.Writer, h *Header) error {
	b, err := json.Marshal(h)
	if err != nil {
		return errors.Wrap(err, "logio: encode header")
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return errors.Wrap(err, "logio: write header")
}

// Progress is told how many events of total are done; total is 0 when unknown. It is
// called at most every few thousand events, from one goroutine. nil: no progress.
type Progress func(done, total int64)

func (p Progress) report(done, total int64) {
	if p != nil {
		p(done, total)
	}
}

// progressEvery is how often (in events) progress is reported.
const progressEvery = 4096

// lineReader reads a file's lines, counting them.
type lineReader struct {
	sc   *bufio.Scanner
	line int64
}

func newLineReader(r io.Reader) *lineReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), MaxLine)
	return &lineReader{sc: sc}
}

// next returns the next line (valid until the following call), or io.EOF.
func (lr *lineReader) next() ([]byte, error) {
	if !lr.sc.Scan() {
		if err := lr.sc.Err(); err != nil {
			return nil, errors.Wrapf(err, "logio: line %d", lr.line+1)
		}
		return nil, io.EOF
	}
	lr.line++
	return lr.sc.Bytes(), nil
}

// readHeader reads and checks the first line.
func readHeader(lr *lineReader) (Header, error) {
	line, err := lr.next()
	if errors.Is(err, io.EOF) {
		return Header{}, errors.Wrap(ErrFormat, "empty file")
	}
	if err != nil {
		return Header{}, err
	}
	var h Header
	h.Version = -1
	if err := json.Unmarshal(line, &h); err != nil || h.Version == -1 {
		return Header{}, errors.Wrapf(ErrFormat, "first line is not a header with \"coilLogExport\" (%v)", err)
	}
	if h.Version != FormatVersion {
		return Header{}, errors.Wrapf(ErrFormat, "format version %d, this build reads %d", h.Version, FormatVersion)
	}
	if h.Kind != KindExport && h.Kind != KindArchive {
		return Header{}, errors.Wrapf(ErrFormat, "kind %q (want export or archive)", h.Kind)
	}
	for s, r := range h.Streams {
		if err := s.Validate(); err != nil {
			return Header{}, errors.Wrapf(ErrFormat, "header: %v", err)
		}
		if r.First == 0 || r.Last < r.First {
			return Header{}, errors.Wrapf(ErrFormat, "header: %s: range #%d-#%d", s, r.First, r.Last)
		}
	}
	return h, nil
}

// BrokenError names the first event of a log or file that does not verify.
type BrokenError struct {
	Stream events.Stream
	Seq    uint64
	Err    error
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("chain broken at %s #%d: %v", e.Stream, e.Seq, e.Err)
}

func (e *BrokenError) Unwrap() error { return e.Err }

func broken(s events.Stream, seq uint64, err error) error {
	return errors.Mark(&BrokenError{Stream: s, Seq: seq, Err: err}, ErrBroken)
}

func brokenf(s events.Stream, seq uint64, format string, args ...any) error {
	return broken(s, seq, errors.Newf(format, args...))
}
