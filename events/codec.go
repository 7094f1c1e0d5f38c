package events

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/errors"
)

// The stored form of an event is compact binary (see docs/design.md, "Encoding"):
//
//	magic(1) schema(uvarint) type(string) time(uvarint ns) actor(string) prev(32) payload
//
// Strings are uvarint-length-prefixed; IDs that are lower-case hex (container IDs, pod UIDs)
// are stored as raw bytes. Stream and sequence are not stored in the value (the key holds
// them) but are part of the hash:
//
//	hash = sha256(stream || 0x00 || uvarint(seq) || value)
//
// The encoding is a function of the logical event, so an event that round-trips through
// JSON (export/import) re-encodes to the same bytes and the same hash.
const magic = 0xC1

// Encode returns the stored bytes of e (which must have a payload).
func Encode(e *Event) ([]byte, error) {
	if e.Payload == nil {
		return nil, errors.New("events: encode: event has no payload")
	}
	if e.Time.UnixNano() < 0 {
		return nil, errors.Newf("events: encode: time %s is before 1970", e.Time)
	}
	w := writer{b: make([]byte, 0, 128)}
	w.b = append(w.b, magic)
	schema := e.Schema
	if schema == 0 {
		schema = SchemaVersion
	}
	w.uvarint(uint64(schema))
	w.str(string(e.Payload.EventType()))
	w.uvarint(uint64(e.Time.UnixNano()))
	w.str(e.Actor)
	w.raw(e.Prev[:])
	e.Payload.appendTo(&w)
	if w.err != nil {
		return nil, errors.Wrapf(w.err, "events: encode %s", e.Payload.EventType())
	}
	return w.b, nil
}

// HashOf computes the chain hash of an event stored as value at stream/seq.
func HashOf(stream Stream, seq uint64, value []byte) Hash {
	h := sha256.New()
	var hdr [len("node/") + 64 + 1 + binary.MaxVarintLen64]byte
	b := append(hdr[:0], stream...)
	b = append(b, 0)
	b = binary.AppendUvarint(b, seq)
	h.Write(b)
	h.Write(value)
	var out Hash
	h.Sum(out[:0])
	return out
}

// Decode parses the stored bytes of the event at stream/seq and computes its hash.
// An unknown type returns ErrUnknownType, a newer schema ErrFutureSchema, bad bytes
// ErrCorrupt; each names the stream and sequence.
func Decode(stream Stream, seq uint64, value []byte) (*Event, error) {
	e := &Event{Stream: stream, Seq: seq}
	if err := decodeInto(e, value); err != nil {
		return nil, errors.Wrapf(err, "%s #%d", stream, seq)
	}
	e.Hash = HashOf(stream, seq, value)
	return e, nil
}

func decodeInto(e *Event, value []byte) error {
	r := reader{b: value}
	if len(value) == 0 || value[0] != magic {
		return errors.Wrap(ErrCorrupt, "not a Coil event (bad magic byte)")
	}
	r.b = r.b[1:]
	schema := r.uvarint()
	if r.err == nil && schema > SchemaVersion {
		return errors.Wrapf(ErrFutureSchema, "schema %d, this build reads up to %d: upgrade coil before reading this log", schema, SchemaVersion)
	}
	if schema == 0 && r.err == nil {
		return errors.Wrap(ErrCorrupt, "schema 0")
	}
	e.Schema = uint32(schema)
	t := Type(r.str())
	if r.err != nil {
		return errors.Wrap(ErrCorrupt, r.err.Error())
	}
	p := newPayload(t)
	if p == nil {
		return errors.Wrapf(ErrUnknownType, "%q: this build of coil does not know it; upgrade before reading this log", string(t))
	}
	ns := r.uvarint()
	if ns > 1<<63-1 {
		return errors.Wrap(ErrCorrupt, "time out of range")
	}
	e.Time = time.Unix(0, int64(ns)).UTC()
	e.Actor = r.str()
	copy(e.Prev[:], r.fixed(len(e.Prev)))
	p.readFrom(&r)
	if r.err != nil {
		return errors.Wrapf(ErrCorrupt, "%s: %v", t, r.err)
	}
	if len(r.b) != 0 {
		return errors.Wrapf(ErrCorrupt, "%s: %d trailing bytes", t, len(r.b))
	}
	e.Payload = p
	return nil
}

type writer struct {
	b   []byte
	err error
}

func (w *writer) uvarint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *writer) raw(p []byte)     { w.b = append(w.b, p...) }
func (w *writer) str(s string) {
	if w.err == nil && !utf8.ValidString(s) {
		// Strings must survive JSON export/import unchanged.
		w.err = errors.Newf("string %q is not valid UTF-8", s)
	}
	w.uvarint(uint64(len(s)))
	w.b = append(w.b, s...)
}
func (w *writer) bytes(p []byte) { w.uvarint(uint64(len(p))); w.b = append(w.b, p...) }

// id stores lower-case even-length hex as raw bytes (tag 1), anything else as a string (tag 0).
func (w *writer) id(s string) {
	if isLowerHex(s) {
		w.b = append(w.b, 1)
		w.uvarint(uint64(len(s) / 2))
		for i := 0; i < len(s); i += 2 {
			w.b = append(w.b, unhex(s[i])<<4|unhex(s[i+1]))
		}
		return
	}
	w.b = append(w.b, 0)
	w.str(s)
}

func (w *writer) addr(a netip.Addr) {
	switch {
	case !a.IsValid():
		w.b = append(w.b, 0)
	case a.Is4():
		w.b = append(w.b, 4)
		v := a.As4()
		w.b = append(w.b, v[:]...)
	default:
		w.b = append(w.b, 16)
		v := a.As16()
		w.b = append(w.b, v[:]...)
	}
}

func (w *writer) addrs(as []netip.Addr) {
	w.uvarint(uint64(len(as)))
	for _, a := range as {
		w.addr(a)
	}
}

func (w *writer) prefix(p netip.Prefix) {
	w.addr(p.Addr())
	if p.IsValid() {
		w.b = append(w.b, byte(p.Bits()))
	}
}

func (w *writer) subnet(s Subnet) { w.prefix(s.IPv4); w.prefix(s.IPv6) }

func isLowerHex(s string) bool {
	if len(s) == 0 || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

const hexdigits = "0123456789abcdef"

// reader decodes; the first error sticks and later reads return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = errors.New(msg)
	}
	r.b = nil
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	if n > 1 && r.b[n-1] == 0 {
		// An overlong varint decodes to the same value as the minimal one: accepting it
		// would let two byte strings (two hashes) stand for one event.
		r.fail("non-minimal varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarintMax(max uint64) uint64 {
	v := r.uvarint()
	if v > max {
		r.fail("value out of range")
		return 0
	}
	return v
}

func (r *reader) u32() uint32 { return uint32(r.uvarintMax(1<<32 - 1)) }

// count reads a length that must fit in the remaining bytes at minSize bytes per element.
func (r *reader) count(minSize int) int {
	n := r.uvarint()
	if n > uint64(len(r.b)/minSize+1) {
		r.fail("length beyond end of data")
		return 0
	}
	return int(n)
}

func (r *reader) fixed(n int) []byte {
	if r.err != nil {
		return make([]byte, n)
	}
	if len(r.b) < n {
		r.fail("truncated")
		return make([]byte, n)
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) bytesField() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail("string beyond end of data")
		return nil
	}
	return r.fixed(int(n))
}

func (r *reader) str() string {
	s := string(r.bytesField())
	if r.err == nil && !utf8.ValidString(s) {
		r.fail("string is not valid UTF-8")
		return ""
	}
	return s
}

func (r *reader) id() string {
	tag := r.fixed(1)[0]
	switch tag {
	case 0:
		s := r.str()
		if isLowerHex(s) {
			r.fail("hex id stored as a string") // the writer stores it as bytes (tag 1)
		}
		return s
	case 1:
		p := r.bytesField()
		if len(p) == 0 && r.err == nil {
			r.fail("empty hex id")
		}
		out := make([]byte, 2*len(p))
		for i, c := range p {
			out[2*i], out[2*i+1] = hexdigits[c>>4], hexdigits[c&0xf]
		}
		return string(out)
	}
	r.fail("bad id tag")
	return ""
}

func (r *reader) addr() netip.Addr {
	switch n := r.fixed(1)[0]; n {
	case 0:
		return netip.Addr{}
	case 4:
		return netip.AddrFrom4([4]byte(r.fixed(4)))
	case 16:
		return netip.AddrFrom16([16]byte(r.fixed(16)))
	}
	r.fail("bad address length")
	return netip.Addr{}
}

func (r *reader) addrs() []netip.Addr {
	n := r.count(1)
	if n == 0 {
		return nil
	}
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = r.addr()
	}
	return out
}

func (r *reader) prefix() netip.Prefix {
	a := r.addr()
	if !a.IsValid() {
		return netip.Prefix{}
	}
	bits := int(r.fixed(1)[0])
	if bits > a.BitLen() {
		r.fail("bad prefix length")
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, bits)
}

func (r *reader) subnet() Subnet { return Subnet{IPv4: r.prefix(), IPv6: r.prefix()} }
