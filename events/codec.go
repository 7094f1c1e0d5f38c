package events

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cockroachdb/errors"
)

// The stored form of an event is compact binary (see docs/design.md, "Encoding"):
//
//	magic(1) schema(uvarint) type(uvarint code) time(uvarint ns) actor prev(32) payload
//
// Strings are uvarint-length-prefixed; IDs that are lower-case hex (container IDs) or
// canonical UUIDs (pod UIDs) are stored as raw bytes. The type is a code from an
// append-only table (typeCodes); the actor of a node stream's own events is implied. Stream and sequence are not stored in the value (the key holds
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
	w.uvarint(uint64(typeCode(e.Payload.EventType())))
	w.uvarint(uint64(e.Time.UnixNano()))
	w.actor(e.Stream, e.Actor)
	w.raw(e.Prev[:])
	e.Payload.appendTo(&w)
	if w.err != nil {
		return nil, errors.Wrapf(w.err, "events: encode %s", e.Payload.EventType())
	}
	return w.b, nil
}

// HashOf computes the chain hash of an event stored as value at stream/seq.
func HashOf(stream Stream, seq uint64, value []byte) Hash {
	bp := hashBufs.Get().(*[]byte)
	b := append((*bp)[:0], stream...)
	b = append(b, 0)
	b = binary.AppendUvarint(b, seq)
	b = append(b, value...)
	out := Hash(sha256.Sum256(b))
	*bp = b
	hashBufs.Put(bp)
	return out
}

// hashBufs recycles HashOf's buffers (sha256.Sum256 over one buffer does not allocate,
// a hash.Hash does).
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Decode parses the stored bytes of the event at stream/seq and computes its hash.
// An unknown type returns ErrUnknownType, a newer schema ErrFutureSchema, bad bytes
// ErrCorrupt; each names the stream and sequence.
func Decode(stream Stream, seq uint64, value []byte) (*Event, error) {
	return decode(stream, seq, value, nil)
}

// Decoder decodes many events (a replay): it interns the names that repeat across
// events. Not safe for concurrent use; make one per reader.
type Decoder struct{ in map[string]string }

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder { return &Decoder{in: make(map[string]string, 64)} }

// Decode is Decode through the decoder's name table.
func (d *Decoder) Decode(stream Stream, seq uint64, value []byte) (*Event, error) {
	return decode(stream, seq, value, d.in)
}

func decode(stream Stream, seq uint64, value []byte, in map[string]string) (*Event, error) {
	e := &Event{Stream: stream, Seq: seq}
	if err := decodeInto(e, value, in); err != nil {
		return nil, errors.Wrapf(err, "%s #%d", stream, seq)
	}
	e.Hash = HashOf(stream, seq, value)
	return e, nil
}

func decodeInto(e *Event, value []byte, in map[string]string) error {
	r := reader{b: value, in: in}
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
	t, err := r.typ()
	if err != nil {
		return err
	}
	p := newPayload(t)
	ns := r.uvarint()
	if ns > 1<<63-1 {
		return errors.Wrap(ErrCorrupt, "time out of range")
	}
	e.Time = time.Unix(0, int64(ns)).UTC()
	e.Actor = r.actor(e.Stream)
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

// typeCodes is the stored code of each event type: an append-only table (never reuse
// or renumber a code). Code 0 means the type's name follows as a string, the form a
// future type may take before it gets a code; this build writes codes only.
var typeCodes = [...]Type{
	1: TypePoolCreated, 2: TypePoolSubnetAdded, 3: TypePoolDeleted,
	4: TypeBlockAssigned, 5: TypeBlockReleased, 6: TypeBlockReclaimed,
	7: TypeAddressAssigned, 8: TypeAddressReleased,
	9: TypeNodeRegistered, 10: TypeNodeRetired, 11: TypeSnapshot,
	12: TypePoolSplit, 13: TypeNodeBlockAdded, 14: TypeNodeBlockRemoved,
	// 15-24: cluster level, reservations, pool options,
	// lifecycle and node selectors (issue 14).
	15: TypeClusterLevelRaised,
	16: TypeAddressesReserved, 17: TypeAddressesUnreserved, 18: TypePoolNetworkBroadcastSet,
	// 23-25: fixed addresses (issue 14, item 3); 25 is kept for them.
	23: TypeAddressClaimed, 24: TypeAddressClaimReleased,
	19: TypePoolNodeSelectorSet, 20: TypePoolDisabled, 21: TypePoolEnabled, 22: TypeNodeLabelsSet,
}

// knownCodes describes the codes of typeCodes as ranges: "1-11, 15".
func knownCodes() string {
	var parts []string
	for i := 1; i < len(typeCodes); i++ {
		if typeCodes[i] == "" {
			continue
		}
		j := i
		for j+1 < len(typeCodes) && typeCodes[j+1] != "" {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(i))
		} else {
			parts = append(parts, strconv.Itoa(i)+"-"+strconv.Itoa(j))
		}
		i = j
	}
	return strings.Join(parts, ", ")
}

func typeCode(t Type) int {
	for i, u := range typeCodes {
		if i > 0 && u == t {
			return i
		}
	}
	return 0
}

// actor stores the actor; on a node stream the node itself (the usual actor there) is
// stored as a zero length, and any other actor as its length + 1 and bytes.
func (w *writer) actor(s Stream, a string) {
	if kind, name := s.Kind(); kind == "node" && a == name {
		w.uvarint(0)
		return
	}
	if w.err == nil && !utf8.ValidString(a) {
		w.err = errors.Newf("actor %q is not valid UTF-8", a)
	}
	w.uvarint(uint64(len(a)) + 1)
	w.b = append(w.b, a...)
}

// id stores lower-case even-length hex as raw bytes (tag 1), anything else as a string (tag 0).
func (w *writer) id(s string) {
	if isLowerUUID(s) {
		w.b = append(w.b, 2)
		for i := 0; i < len(s); i++ {
			if s[i] == '-' {
				continue
			}
			w.b = append(w.b, unhex(s[i])<<4|unhex(s[i+1]))
			i++
		}
		return
	}
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

func (w *writer) ranges(rs []AddrRange) {
	w.uvarint(uint64(len(rs)))
	for _, r := range rs {
		w.addr(r.First)
		w.addr(r.Last)
	}
}

func (w *writer) bool(b bool) {
	if b {
		w.uvarint(1)
		return
	}
	w.uvarint(0)
}

// isLowerUUID reports the canonical lower-case UUID form (8-4-4-4-12 hex digits), as
// Kubernetes writes pod UIDs.
func isLowerUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

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
	in  map[string]string // interned names, when decoding through a Decoder
}

// maxInterned bounds a Decoder's table of names.
const maxInterned = 4096

// name reads a string that repeats across events (pool, node, interface, namespace,
// reason): through a Decoder it is interned, so a replay does not allocate it per event.
func (r *reader) name() string {
	if r.in == nil {
		return r.str()
	}
	b := r.bytesField()
	if s, ok := r.in[string(b)]; ok {
		return s
	}
	s := string(b)
	if r.err == nil && !utf8.ValidString(s) {
		r.fail("string is not valid UTF-8")
		return ""
	}
	if len(r.in) < maxInterned {
		r.in[s] = s
	}
	return s
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

// typ reads the type: a code from typeCodes, or 0 and a name (a type this build does
// not know, or ErrCorrupt if it is one that has a code).
func (r *reader) typ() (Type, error) {
	code := r.uvarint()
	if r.err != nil {
		return "", errors.Wrap(ErrCorrupt, r.err.Error())
	}
	if code == 0 {
		name := Type(r.str())
		if r.err != nil {
			return "", errors.Wrap(ErrCorrupt, r.err.Error())
		}
		if typeCode(name) != 0 {
			return "", errors.Wrapf(ErrCorrupt, "type %q stored by name, not by its code", name)
		}
		return "", errors.Wrapf(ErrUnknownType, "%q: this build of coil does not know it; upgrade before reading this log", string(name))
	}
	if code >= uint64(len(typeCodes)) || typeCodes[code] == "" {
		return "", errors.Wrapf(ErrUnknownType, "type code %d: this build of coil does not know it (it knows %s); upgrade before reading this log", code, knownCodes())
	}
	return typeCodes[code], nil
}

func (r *reader) actor(s Stream) string {
	n := r.uvarint()
	if n == 0 {
		kind, name := s.Kind()
		if kind != "node" && r.err == nil {
			r.fail("implied actor outside a node stream")
		}
		return name
	}
	if n-1 > uint64(len(r.b)) {
		r.fail("actor beyond end of data")
		return ""
	}
	a := string(r.fixed(int(n - 1)))
	if kind, name := s.Kind(); kind == "node" && a == name {
		r.fail("node actor stored in full") // the writer stores it as implied
	}
	if !utf8.ValidString(a) {
		r.fail("actor is not valid UTF-8")
	}
	return a
}

func (r *reader) id() string {
	tag := r.fixed(1)[0]
	switch tag {
	case 0:
		s := r.str()
		if isLowerHex(s) || isLowerUUID(s) {
			r.fail("hex id stored as a string") // the writer stores it as bytes (tag 1 or 2)
		}
		return s
	case 2:
		p := r.fixed(16)
		out := make([]byte, 0, 36)
		for i, c := range p {
			if i == 4 || i == 6 || i == 8 || i == 10 {
				out = append(out, '-')
			}
			out = append(out, hexdigits[c>>4], hexdigits[c&0xf])
		}
		return string(out)
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

func (r *reader) ranges() []AddrRange {
	n := r.count(2)
	if n == 0 {
		return nil
	}
	out := make([]AddrRange, n)
	for i := range out {
		out[i] = AddrRange{First: r.addr(), Last: r.addr()}
	}
	return out
}

func (r *reader) bool() bool { return r.uvarintMax(1) == 1 }
