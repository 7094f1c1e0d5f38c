package events

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/cockroachdb/errors"
)

// DefaultPrefix is the etcd key prefix of Coil's data.
const DefaultPrefix = "/coil/"

// MaxSeq is the largest sequence number a stream can hold: keys carry the sequence as
// 12 zero-padded decimal digits, so key order is stream order.
const MaxSeq = 999_999_999_999

// ErrBadKey: an etcd key that is not one of the log's keys, or a malformed head value.
var ErrBadKey = errors.New("events: malformed log key")

// Keys is the etcd key layout under a prefix:
//
//	<prefix>log/<stream>/<seq as %012d>   one event (value: its encoded bytes)
//	<prefix>head/<stream>                 the stream's head (value: uvarint seq + 32-byte hash)
//	<prefix>snap/<stream>                 the sequence of the stream's newest snapshot (uvarint)
//	<prefix>alive/<node>                  a node's liveness key, attached to its lease
//	<prefix>index/<stream>/<first as %012d> a derived attachment-index entry for the stream's
//	                                      events from first on (see package logindex); not
//	                                      part of the log: never exported, rebuildable
type Keys struct{ prefix string }

// NewKeys returns the layout under prefix; "" means DefaultPrefix, and a missing
// trailing "/" is added.
func NewKeys(prefix string) Keys {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return Keys{prefix: prefix}
}

// Prefix is the layout's prefix (ending in "/").
func (k Keys) Prefix() string { return k.prefix }

// LogPrefix is the prefix of all event keys.
func (k Keys) LogPrefix() string { return k.prefix + "log/" }

// HeadPrefix is the prefix of all head keys.
func (k Keys) HeadPrefix() string { return k.prefix + "head/" }

// StreamPrefix is the prefix of the event keys of one stream (ends in "/").
func (k Keys) StreamPrefix(s Stream) string { return k.prefix + "log/" + string(s) + "/" }

// Event is the key of event seq of stream s.
func (k Keys) Event(s Stream, seq uint64) string {
	return k.StreamPrefix(s) + fmtSeq(seq)
}

// Head is the key of stream s's head.
func (k Keys) Head(s Stream) string { return k.prefix + "head/" + string(s) }

// Snap is the key of stream s's snapshot pointer.
func (k Keys) Snap(s Stream) string { return k.prefix + "snap/" + string(s) }

// IndexPrefix is the prefix of all attachment-index entries (derived data, see package
// logindex).
func (k Keys) IndexPrefix() string { return k.prefix + "index/" }

// IndexStreamPrefix is the prefix of the index entries of one stream (ends in "/").
func (k Keys) IndexStreamPrefix(s Stream) string { return k.prefix + "index/" + string(s) + "/" }

// Index is the key of stream s's index entry whose first sequence is first.
func (k Keys) Index(s Stream, first uint64) string { return k.IndexStreamPrefix(s) + fmtSeq(first) }

// ParseIndex splits an index key into stream and first sequence, with the rules of
// ParseEvent (ErrBadKey for keys outside the index prefix, invalid streams, sequences
// that are not exactly 12 digits or are 0).
func (k Keys) ParseIndex(key string) (Stream, uint64, error) {
	rest, ok := strings.CutPrefix(key, k.IndexPrefix())
	if !ok {
		return "", 0, errors.Wrapf(ErrBadKey, "%q is not under %s", key, k.IndexPrefix())
	}
	return parseStreamSeq(key, rest)
}

// Alive is the liveness key of node.
func (k Keys) Alive(node string) string { return k.prefix + "alive/" + node }

// AliveKey is the liveness key of node under prefix ("" means DefaultPrefix).
func AliveKey(prefix, node string) string { return NewKeys(prefix).Alive(node) }

func fmtSeq(seq uint64) string {
	s := strconv.FormatUint(seq, 10)
	if len(s) < 12 {
		s = "000000000000"[len(s):] + s
	}
	return s
}

// ParseEvent splits an event key into stream and sequence. It rejects keys outside the
// log prefix, invalid stream names, and sequences that are not exactly 12 digits or are 0.
func (k Keys) ParseEvent(key string) (Stream, uint64, error) {
	rest, ok := strings.CutPrefix(key, k.LogPrefix())
	if !ok {
		return "", 0, errors.Wrapf(ErrBadKey, "%q is not under %s", key, k.LogPrefix())
	}
	return parseStreamSeq(key, rest)
}

// parseStreamSeq parses rest, "<stream>/<12 digits>", of key.
func parseStreamSeq(key, rest string) (Stream, uint64, error) {
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", 0, errors.Wrapf(ErrBadKey, "%q has no sequence", key)
	}
	s, digits := Stream(rest[:i]), rest[i+1:]
	if err := s.Validate(); err != nil {
		return "", 0, errors.Wrapf(ErrBadKey, "%q: %v", key, err)
	}
	if len(digits) != 12 {
		return "", 0, errors.Wrapf(ErrBadKey, "%q: sequence is not 12 digits", key)
	}
	var seq uint64
	for j := 0; j < len(digits); j++ {
		c := digits[j]
		if c < '0' || c > '9' {
			return "", 0, errors.Wrapf(ErrBadKey, "%q: sequence is not 12 digits", key)
		}
		seq = seq*10 + uint64(c-'0')
	}
	if seq == 0 {
		return "", 0, errors.Wrapf(ErrBadKey, "%q: sequence 0", key)
	}
	return s, seq, nil
}

// ParseHead returns the stream of a head key.
func (k Keys) ParseHead(key string) (Stream, error) {
	rest, ok := strings.CutPrefix(key, k.HeadPrefix())
	if !ok {
		return "", errors.Wrapf(ErrBadKey, "%q is not under %s", key, k.HeadPrefix())
	}
	s := Stream(rest)
	if err := s.Validate(); err != nil {
		return "", errors.Wrapf(ErrBadKey, "%q: %v", key, err)
	}
	return s, nil
}

// EncodeHead is the stored value of a head: uvarint seq followed by the 32-byte hash.
func EncodeHead(v Version) []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(v.Hash))
	b = binary.AppendUvarint(b, v.Seq)
	return append(b, v.Hash[:]...)
}

// minimalUvarint is binary.Uvarint that refuses an overlong encoding (a last byte of 0
// after the first): one value has one stored form, as in the event codec, so a head
// compared by value in a transaction matches only the bytes EncodeHead writes.
func minimalUvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, 0
	}
	return v, n
}

// DecodeHead parses a stored head value.
func DecodeHead(b []byte) (Version, error) {
	seq, n := minimalUvarint(b)
	if n <= 0 || len(b)-n != len(Hash{}) || seq == 0 || seq > MaxSeq {
		return Version{}, errors.Wrapf(ErrBadKey, "head value of %d bytes does not decode", len(b))
	}
	var v Version
	v.Seq = seq
	copy(v.Hash[:], b[n:])
	return v, nil
}

// checkSeq rejects heads past MaxSeq.
func checkSeq(s Stream, seq uint64) error {
	if seq > MaxSeq {
		return errors.Wrapf(ErrTooLarge, "%s: sequence %d beyond the key format's %d", s, seq, uint64(MaxSeq))
	}
	return nil
}

// EncodeSnapSeq is the stored value of a snapshot pointer: the snapshot event's sequence
// as a uvarint.
func EncodeSnapSeq(seq uint64) []byte { return binary.AppendUvarint(nil, seq) }

// DecodeSnapSeq parses a snapshot pointer's value.
func DecodeSnapSeq(b []byte) (uint64, error) {
	seq, n := minimalUvarint(b)
	if n <= 0 || n != len(b) || seq == 0 || seq > MaxSeq {
		return 0, errors.Wrapf(ErrBadKey, "snapshot pointer of %d bytes does not decode", len(b))
	}
	return seq, nil
}

// seqOfKey parses the sequence of an event key known to start with a stream's prefix,
// without allocating (the hot path of Read). It accepts exactly 12 digits, not 0.
func seqOfKey(key []byte, streamPrefix string) (uint64, bool) {
	if len(key) != len(streamPrefix)+12 || string(key[:len(streamPrefix)]) != streamPrefix {
		return 0, false
	}
	var seq uint64
	for _, c := range key[len(streamPrefix):] {
		if c < '0' || c > '9' {
			return 0, false
		}
		seq = seq*10 + uint64(c-'0')
	}
	return seq, seq != 0
}
