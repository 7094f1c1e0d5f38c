package events

import (
	"context"
	"slices"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"
)

// The in-memory log's administrative operations (Store). Unlike etcd, MemLog keeps only
// the latest attachment index and the latest counts: IndexEntries and Count ignore rev
// beyond checking it.

// Prefix implements Store. A MemLog's liveness keys are named under DefaultPrefix.
func (l *MemLog) Prefix() string { return NewKeys("").Prefix() }

func (l *MemLog) guardHoldsLocked(g BulkGuard) bool {
	if g.NoNodeStartedAfter <= 0 {
		return true
	}
	alive := NewKeys("").Alive("")
	for k, rev := range l.created {
		if strings.HasPrefix(k, alive) && rev > g.NoNodeStartedAfter {
			return false
		}
	}
	return true
}

// LiveNodes implements Store: the lease keys under the liveness prefix (no TTLs: a
// MemLog's leases do not expire on their own). A MemLog's keys carry no value: their
// nodes count as this build's (CurrentLevel).
func (l *MemLog) LiveNodes(ctx context.Context, ttl bool) ([]LiveNode, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	prefix := NewKeys("").Alive("")
	var out []LiveNode
	for k, lease := range l.leases {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			out = append(out, LiveNode{Node: name, Key: k, Lease: lease, Created: l.created[k], Level: CurrentLevel})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, l.rev, nil
}

// OldestStored implements Store.
func (l *MemLog) OldestStored(ctx context.Context, stream Stream, rev int64) (uint64, int64, error) {
	if err := stream.Validate(); err != nil {
		return 0, 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	rev, err := l.revLocked(rev)
	if err != nil {
		return 0, 0, err
	}
	if st := l.streams[stream]; st != nil {
		for i, m := range st.events {
			if m.value != nil && m.rev <= rev {
				return uint64(i) + 1, rev, nil
			}
		}
	}
	return 0, rev, nil
}

// ReadRange implements Store.
func (l *MemLog) ReadRange(ctx context.Context, stream Stream, first, last uint64, rev int64, prev *Version, fn func(*Event) error) (Version, error) {
	if err := stream.Validate(); err != nil {
		return Version{}, err
	}
	if first == 0 || last < first {
		return Version{}, errors.Newf("events: read %s #%d-#%d", stream, first, last)
	}
	l.mu.Lock()
	rev, err := l.revLocked(rev)
	var stored []memEvent
	if st := l.streams[stream]; err == nil && st != nil && first <= uint64(len(st.events)) {
		stored = slices.Clone(st.events[first-1 : min(last, uint64(len(st.events)))])
	}
	l.mu.Unlock()
	if err != nil {
		return Version{}, err
	}
	chain := rangeChain(stream, first, prev)
	dec := NewDecoder()
	next := first
	for _, m := range stored {
		if m.value == nil || m.rev > rev {
			break
		}
		if err := chain.deliver(dec, next, m.value, m.rev, fn); err != nil {
			return Version{}, err
		}
		next++
	}
	return chain.Head(), checkRangeEnd(stream, first, last, next)
}

// Count implements Store.
func (l *MemLog) Count(ctx context.Context, rev int64) (Counts, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var c Counts
	if _, err := l.revLocked(rev); err != nil {
		return c, err
	}
	for _, st := range l.streams {
		for _, m := range st.events {
			if m.value != nil {
				c.Events++
			}
		}
		if st.head().Seq > 0 {
			c.Streams++
		}
		if len(st.snaps) > 0 && st.snaps[len(st.snaps)-1].seq > 0 {
			c.Snapshots++
		}
	}
	for _, es := range l.index {
		c.Index += int64(len(es))
	}
	return c, nil
}

// Clear implements Store.
func (l *MemLog) Clear(ctx context.Context, log bool, g BulkGuard) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.guardHoldsLocked(g) {
		return errors.Wrap(ErrNodeStarted, "nothing deleted")
	}
	l.rev++
	l.index = map[Stream]map[uint64][]byte{}
	if log {
		l.streams = map[Stream]*memStream{}
		l.history = nil
	}
	l.notifyLocked()
	return nil
}

// PutEvents implements Store.
func (l *MemLog) PutEvents(ctx context.Context, evs []StoredEvent) error {
	if err := checkStoredEvents(evs); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev++
	for _, e := range evs {
		st := l.streamLocked(e.Stream)
		for uint64(len(st.events)) < e.Seq {
			st.events = append(st.events, memEvent{})
		}
		st.events[e.Seq-1] = memEvent{rev: l.rev, value: slices.Clone(e.Value)}
	}
	return nil
}

// InitHeads implements Store.
func (l *MemLog) InitHeads(ctx context.Context, heads []StreamInit, g BulkGuard) error {
	if err := checkInits(heads); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(heads) > 0 {
		step := heads[:min(initHeadsStep, len(heads))]
		heads = heads[len(step):]
		if !l.guardHoldsLocked(g) {
			return errors.Wrap(ErrNodeStarted, "write heads")
		}
		for _, h := range step {
			if st := l.streams[h.Stream]; st != nil && len(st.heads) > 0 {
				return errors.Wrapf(ErrConflict, "write heads: a head among %s..%s exists", step[0].Stream, step[len(step)-1].Stream)
			}
		}
		l.rev++
		for _, h := range step {
			st := l.streamLocked(h.Stream)
			st.heads = append(st.heads, memHead{rev: l.rev, v: h.Head})
			if h.Snapshot > 0 {
				st.snaps = append(st.snaps, memSnap{rev: l.rev, seq: h.Snapshot})
			}
		}
	}
	l.notifyLocked()
	return nil
}

// Trim implements Store.
func (l *MemLog) Trim(ctx context.Context, stream Stream, from, to, keep uint64, keepRev int64) (int64, error) {
	if err := checkTrim(stream, from, to, keep); err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.streams[stream]
	if st == nil || keep > uint64(len(st.events)) || st.events[keep-1].value == nil || st.events[keep-1].rev != keepRev {
		return 0, errors.Wrapf(ErrConflict, "trim %s: #%d is no longer the event stored at revision %d", stream, keep, keepRev)
	}
	var n int64
	for seq := from; seq < to; seq++ {
		if st.events[seq-1].value != nil {
			st.events[seq-1] = memEvent{}
			n++
		}
	}
	if n > 0 {
		l.rev++
	}
	return n, nil
}

// StoredValues implements Store.
func (l *MemLog) StoredValues(ctx context.Context, stream Stream, seqs []uint64, rev int64) ([][]byte, error) {
	if err := stream.Validate(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	rev, err := l.revLocked(rev)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(seqs))
	st := l.streams[stream]
	for i, seq := range seqs {
		if st != nil && seq > 0 && seq <= uint64(len(st.events)) {
			if m := st.events[seq-1]; m.value != nil && m.rev <= rev {
				out[i] = slices.Clone(m.value)
			}
		}
	}
	return out, nil
}

// IndexEntries implements Store.
func (l *MemLog) IndexEntries(ctx context.Context, stream Stream, rev int64, keysOnly bool) ([]IndexValue, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.revLocked(rev); err != nil {
		return nil, err
	}
	var out []IndexValue
	for s, es := range l.index {
		if stream != "" && s != stream {
			continue
		}
		for first, v := range es {
			iv := IndexValue{Stream: s, First: first}
			if !keysOnly {
				iv.Value = slices.Clone(v)
			}
			out = append(out, iv)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Stream != out[j].Stream {
			return out[i].Stream < out[j].Stream
		}
		return out[i].First < out[j].First
	})
	return out, nil
}

// PutIndex implements Store.
func (l *MemLog) PutIndex(ctx context.Context, stream Stream, first uint64, value []byte) (bool, error) {
	if err := stream.Validate(); err != nil {
		return false, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	es := l.index[stream]
	if es == nil {
		es = map[uint64][]byte{}
		l.index[stream] = es
	}
	if _, ok := es[first]; ok {
		return false, nil
	}
	l.rev++
	es[first] = slices.Clone(value)
	return true, nil
}

// DeleteIndex implements Store.
func (l *MemLog) DeleteIndex(ctx context.Context, stream Stream, firsts []uint64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	switch {
	case firsts == nil && stream == "":
		for _, es := range l.index {
			n += int64(len(es))
		}
		l.index = map[Stream]map[uint64][]byte{}
	case firsts == nil:
		n = int64(len(l.index[stream]))
		delete(l.index, stream)
	default:
		for _, f := range firsts {
			if _, ok := l.index[stream][f]; ok {
				delete(l.index[stream], f)
				n++
			}
		}
	}
	if n > 0 {
		l.rev++
	}
	return n, nil
}
