package events

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/internal/safetext"
)

// SchemaVersion is the envelope schema this build writes and the newest it reads.
const SchemaVersion = 1

// Sentinel errors. Check them with errors.Is.
var (
	// ErrConflict: the stream's head moved since the writer read it. Catch up and decide again.
	ErrConflict = errors.New("events: append conflict")
	// ErrFenced: an append's fencing condition failed (the writer's lease is gone, or a
	// lease that had to be gone is still alive).
	ErrFenced = errors.New("events: fenced")
	// ErrUnknownType: an event type this build does not know.
	ErrUnknownType = errors.New("events: unknown event type")
	// ErrFutureSchema: an event written by a newer schema than this build reads.
	ErrFutureSchema = errors.New("events: event schema is newer than this build")
	// ErrCorrupt: stored bytes that do not decode.
	ErrCorrupt = errors.New("events: corrupt event")
	// ErrChainBroken: an event whose previous-hash does not match its predecessor, or a gap.
	ErrChainBroken = errors.New("events: hash chain broken")
	// ErrInvalidStream: a stream name that is not cluster, pool/NAME, block/POOL/INDEX or
	// node/NAME.
	ErrInvalidStream = errors.New("events: invalid stream name")
	// ErrTooLarge: a batch beyond one transaction's limits.
	ErrTooLarge = errors.New("events: batch too large")
	// ErrUnavailable: the log's store could not be reached in time.
	ErrUnavailable = errors.New("events: log store unavailable")
	// ErrCompacted: a watch or read asked for history that is no longer stored.
	ErrCompacted = errors.New("events: history compacted")
	// ErrRewritten: a stream was rewritten under a reader or writer (`coilctl log import
	// --force` into a live cluster): its head went backwards, or its events no longer
	// continue the hash chain the reader holds. Unlike ErrChainBroken the stored log may
	// be consistent: read it again from the start (or the newest snapshot).
	ErrRewritten = errors.New("events: stream rewritten")
	// ErrPermissionDenied: etcd refused the request to the credentials in use (etcd RBAC;
	// see NodeRole).
	ErrPermissionDenied = errors.New("events: etcd permission denied")
)

// Stream names an event stream.
type Stream string

// ClusterStream holds pool definitions.
const ClusterStream Stream = "cluster"

// PoolStream is the block-ownership stream of a pool.
func PoolStream(pool string) Stream { return Stream("pool/" + pool) }

// NodeStream is the address stream of a node.
func NodeStream(node string) Stream { return Stream("node/" + node) }

// BlockStream is the ownership stream of one block of a pool whose blocks have a stream
// each (docs/design.md, "Block streams"): "block/POOL/INDEX", the index in decimal.
func BlockStream(pool string, index uint64) Stream {
	return Stream("block/" + pool + "/" + strconv.FormatUint(index, 10))
}

// Block returns the pool and index of a block stream; ok is false for any other stream
// (or a malformed block stream name).
func (s Stream) Block() (pool string, index uint64, ok bool) {
	rest, found := strings.CutPrefix(string(s), "block/")
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", 0, false
	}
	pool, digits := rest[:i], rest[i+1:]
	if ValidName(pool) != nil || digits == "" || len(digits) > 20 || (digits[0] == '0' && len(digits) > 1) {
		return "", 0, false
	}
	for j := 0; j < len(digits); j++ {
		if c := digits[j]; c < '0' || c > '9' {
			return "", 0, false
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64) // only overflow can fail here
	if err != nil {
		return "", 0, false
	}
	return pool, n, true
}

// Kind returns "cluster", "pool", "block" or "node", and the name after the first slash
// ("POOL/INDEX" for a block stream).
func (s Stream) Kind() (kind, name string) {
	k, n, ok := strings.Cut(string(s), "/")
	if !ok {
		return k, ""
	}
	return k, n
}

// Validate checks the stream name's shape.
func (s Stream) Validate() error {
	kind, name := s.Kind()
	switch kind {
	case "cluster":
		if name == "" && s == ClusterStream {
			return nil
		}
	case "pool", "node":
		if ValidName(name) == nil {
			return nil
		}
	case "block":
		if _, _, ok := s.Block(); ok {
			return nil
		}
	}
	return errors.Wrapf(ErrInvalidStream, "%q (want cluster, pool/NAME, block/POOL/INDEX or node/NAME)", string(s))
}

// ValidName checks a pool or node name: a DNS-1123 subdomain of at most 63 characters
// (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit).
func ValidName(name string) error {
	if name == "" {
		return errors.New("name is empty")
	}
	if len(name) > 63 {
		return errors.Newf("name %s is longer than 63 characters", safetext.Quote(name))
	}
	for i, c := range name {
		alnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		if alnum {
			continue
		}
		if (c == '-' || c == '.') && i > 0 && i < len(name)-1 {
			continue
		}
		return errors.Newf("name %s is invalid: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", safetext.Quote(name))
	}
	return nil
}

// Hash is a SHA-256 digest; the per-stream chain links each event to its predecessor's hash.
type Hash [sha256.Size]byte

// String is the hex form.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports the zero hash (the "previous hash" of a stream's first event).
func (h Hash) IsZero() bool { return h == Hash{} }

// MarshalText encodes the hash as hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes a hex hash.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) {
		return errors.Newf("hash %q: want %d hex digits", b, 2*len(h))
	}
	_, err := hex.Decode(h[:], b)
	return errors.Wrap(err, "hash")
}

// Type is an event's stable type string. Never derive it from Go type names.
type Type string

// The event types. These strings are stored; never change one.
const (
	TypePoolCreated      Type = "PoolCreated"
	TypePoolSubnetAdded  Type = "PoolSubnetAdded"
	TypePoolDeleted      Type = "PoolDeleted"
	TypeBlockAssigned    Type = "BlockAssigned"
	TypeBlockReleased    Type = "BlockReleased"
	TypeBlockReclaimed   Type = "BlockReclaimed"
	TypeAddressAssigned  Type = "AddressAssigned"
	TypeAddressReleased  Type = "AddressReleased"
	TypeNodeRegistered   Type = "NodeRegistered"
	TypeNodeRetired      Type = "NodeRetired"
	TypeSnapshot         Type = "Snapshot"
	TypePoolSplit        Type = "PoolSplit"
	TypeNodeBlockAdded   Type = "NodeBlockAdded"
	TypeNodeBlockRemoved Type = "NodeBlockRemoved"

	TypeClusterLevelRaised Type = "ClusterLevelRaised"

	TypeAddressesReserved       Type = "AddressesReserved"
	TypeAddressesUnreserved     Type = "AddressesUnreserved"
	TypePoolNetworkBroadcastSet Type = "PoolNetworkBroadcastSet"
	// Fixed addresses (issue 14, item 3).
	TypeAddressClaimed       Type = "AddressClaimed"
	TypeAddressClaimReleased Type = "AddressClaimReleased"
	TypePoolNodeSelectorSet  Type = "PoolNodeSelectorSet"
	TypePoolDisabled         Type = "PoolDisabled"
	TypePoolEnabled          Type = "PoolEnabled"
	TypeNodeLabelsSet        Type = "NodeLabelsSet"
)

// Event is the envelope. Stream, Seq, Prev and Schema are set by the log on append;
// the writer sets Type (through Payload), Time and Actor.
type Event struct {
	Schema  uint32
	Stream  Stream
	Seq     uint64
	Time    time.Time
	Actor   string
	Prev    Hash
	Payload Payload

	// Set when read from a log: the hash of this event and the store revision that
	// committed it (etcd's revision; the in-memory log counts its own).
	Hash     Hash
	Revision int64
}

// Type returns the payload's type.
func (e *Event) Type() Type {
	if e.Payload == nil {
		return ""
	}
	return e.Payload.EventType()
}

// Clock gives the time to stamp on events. Inject it; never call time.Now in domain code.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }
