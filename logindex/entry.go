package logindex

import (
	"encoding/binary"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// DefaultChunkSize is the number of events an entry covers. Entries record their first
// and last sequence, so readers do not depend on it.
const DefaultChunkSize = 1024

// FalsePositiveRate is the target false-positive rate of an entry's Bloom filter.
const FalsePositiveRate = 0.01

// formatV1 is the first byte of a stored entry: format 1 is
// format byte, uvarint first, uvarint last, the 32-byte hash of event last, and the
// filter as bloom.BloomFilter.MarshalBinary writes it.
const formatV1 = 1

// containerKeyLen is how many leading characters of a container ID its key holds.
const containerKeyLen = 12

// Sentinel errors.
var (
	// ErrBadEntry: a stored entry that does not decode (unknown format, truncated).
	ErrBadEntry = errors.New("logindex: malformed index entry")
	// ErrBadChunk: a chunk size or range that cannot be indexed.
	ErrBadChunk = errors.New("logindex: invalid chunk")
)

// PodKey is the index key of pod namespace/name.
func PodKey(namespace, name string) string { return "p:" + namespace + "/" + name }

// ContainerKey is the index key of a container: its ID's first 12 characters (the whole
// ID if shorter). A query by container ID prefix can use it only when the prefix has at
// least 12 characters (ContainerQueryKey).
func ContainerKey(id string) string {
	if len(id) > containerKeyLen {
		id = id[:containerKeyLen]
	}
	return "c:" + id
}

// ContainerQueryKey is the key to look up for a container ID prefix, and false when the
// prefix is shorter than 12 characters: the index cannot narrow such a query, every
// event must be read.
func ContainerQueryKey(prefix string) (string, bool) {
	if len(prefix) < containerKeyLen {
		return "", false
	}
	return ContainerKey(prefix), true
}

// KeysOf appends to dst the index keys an event's payload mentions: PodKey (when a pod is
// named) and ContainerKey of an AddressAssigned, ContainerKey of an AddressReleased,
// none for other types.
func KeysOf(dst []string, p events.Payload) []string {
	switch p := p.(type) {
	case *events.AddressAssigned:
		if p.PodName != "" {
			dst = append(dst, PodKey(p.PodNamespace, p.PodName))
		}
		dst = append(dst, ContainerKey(p.ContainerID))
	case *events.AddressReleased:
		dst = append(dst, ContainerKey(p.ContainerID))
	}
	return dst
}

// Entry is the index of one complete chunk of a stream: its events First..Last mention
// no key for which MayContain is false.
type Entry struct {
	Stream      events.Stream
	First, Last uint64
	// Hash is the hash of event Last as it was when the entry was built.
	Hash   events.Hash
	filter *bloom.BloomFilter
}

// MayContain reports whether the chunk's events may mention key. False is certain (no
// event of the chunk mentions it); true may be a false positive (about 1%).
func (e *Entry) MayContain(key string) bool { return e.filter.TestString(key) }

// NewEntry builds the entry of stream's events first..last from the keys they mention
// (KeysOf); hash is the hash of event last. Build uses it; tools and tests may too.
func NewEntry(s events.Stream, first, last uint64, hash events.Hash, keys []string) *Entry {
	set := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		set[k] = struct{}{}
	}
	return newEntry(s, first, last, hash, set)
}

// newEntry is NewEntry from a set of keys.
func newEntry(s events.Stream, first, last uint64, hash events.Hash, keys map[string]struct{}) *Entry {
	f := bloom.NewWithEstimates(uint(max(len(keys), 1)), FalsePositiveRate)
	for k := range keys {
		f.AddString(k)
	}
	return &Entry{Stream: s, First: first, Last: last, Hash: hash, filter: f}
}

// Encode is the stored value of e.
func (e *Entry) Encode() ([]byte, error) {
	fb, err := e.filter.MarshalBinary()
	if err != nil {
		return nil, errors.Wrap(err, "logindex: encode filter")
	}
	b := make([]byte, 0, 1+2*binary.MaxVarintLen64+len(e.Hash)+len(fb))
	b = append(b, formatV1)
	b = binary.AppendUvarint(b, e.First)
	b = binary.AppendUvarint(b, e.Last)
	b = append(b, e.Hash[:]...)
	return append(b, fb...), nil
}

// Decode parses a stored entry of stream s. It returns ErrBadEntry for an unknown format,
// a bad range or a truncated or oversized filter.
func Decode(s events.Stream, b []byte) (*Entry, error) {
	if len(b) == 0 || b[0] != formatV1 {
		return nil, errors.Wrapf(ErrBadEntry, "%s: unknown format", s)
	}
	rest := b[1:]
	first, n := binary.Uvarint(rest)
	if n <= 0 {
		return nil, errors.Wrapf(ErrBadEntry, "%s: first sequence", s)
	}
	rest = rest[n:]
	last, n := binary.Uvarint(rest)
	if n <= 0 || first == 0 || last < first || last > events.MaxSeq {
		return nil, errors.Wrapf(ErrBadEntry, "%s: range #%d-#%d", s, first, last)
	}
	rest = rest[n:]
	e := &Entry{Stream: s, First: first, Last: last}
	if len(rest) < len(e.Hash) {
		return nil, errors.Wrapf(ErrBadEntry, "%s #%d: truncated hash", s, first)
	}
	copy(e.Hash[:], rest)
	rest = rest[len(e.Hash):]
	// The filter: m, k, bit length (big-endian uint64s), then the bit words. Check the
	// sizes before the library allocates.
	if len(rest) < 24 {
		return nil, errors.Wrapf(ErrBadEntry, "%s #%d: truncated filter", s, first)
	}
	m, k, bits := binary.BigEndian.Uint64(rest), binary.BigEndian.Uint64(rest[8:]), binary.BigEndian.Uint64(rest[16:])
	if m == 0 || k == 0 || k > 64 || bits != m || uint64(len(rest)-24) != (bits+63)/64*8 {
		return nil, errors.Wrapf(ErrBadEntry, "%s #%d: filter of %d bytes does not decode", s, first, len(rest))
	}
	e.filter = &bloom.BloomFilter{}
	if err := e.filter.UnmarshalBinary(rest); err != nil {
		return nil, errors.Wrapf(ErrBadEntry, "%s #%d: filter: %v", s, first, err)
	}
	return e, nil
}
