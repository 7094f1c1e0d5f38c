package events

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/cockroachdb/errors"
)

// MemLog is an in-memory Log for tests and tools. It behaves like EtcdLog (same
// conformance suite): a revision counter orders every append, reads can be pinned to a
// revision, conditions are checked against an in-memory key -> lease table, and Compact
// simulates etcd's compaction of old revisions. It is safe for concurrent use.
type MemLog struct {
	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	rev       int64
	compacted int64
	streams   map[Stream]*memStream
	history   []memPut // every append's events, in revision order
	leases    map[string]int64
	created   map[string]int64 // lease key -> the revision it was created at
	index     map[Stream]map[uint64][]byte
	nextLease int64
	fault     func(op string) error

	base  context.Context
	close context.CancelFunc
	wg    sync.WaitGroup
}

type memStream struct {
	events []memEvent // events[i] is sequence i+1
	heads  []memHead  // in revision order
	snaps  []memSnap  // snapshot pointer values, in revision order
}

type memEvent struct {
	rev   int64
	value []byte
}

type memHead struct {
	rev int64
	v   Version
}

type memPut struct {
	rev    int64
	stream Stream
	seq    uint64
}

var _ Log = (*MemLog)(nil)

// NewMemLog returns an empty in-memory log at revision 1 (like a fresh etcd).
func NewMemLog() *MemLog {
	base, cancel := context.WithCancel(context.Background())
	return &MemLog{
		changed: make(chan struct{}),
		rev:     1,
		streams: map[Stream]*memStream{},
		leases:  map[string]int64{},
		created: map[string]int64{},
		index:   map[Stream]map[uint64][]byte{},
		base:    base,
		close:   cancel,
	}
}

// notifyLocked wakes the watches.
func (l *MemLog) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// SetFault installs f, called at the start of every operation with its name ("append",
// "head", "read", "streams", "watch"); a non-nil error is returned by that operation
// (a watch delivers it and ends). nil removes the hook.
func (l *MemLog) SetFault(f func(op string) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fault = f
}

func (l *MemLog) faultLocked(op string) error {
	if l.fault == nil {
		return nil
	}
	return l.fault(op)
}

// NewLease returns a new lease ID (never 0).
func (l *MemLog) NewLease() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nextLease++
	return 0x1000 + l.nextLease
}

// SetLeaseKey creates or replaces key, attached to lease (as a node's liveness key).
func (l *MemLog) SetLeaseKey(key string, lease int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev++
	if _, ok := l.leases[key]; !ok {
		l.created[key] = l.rev
	}
	l.leases[key] = lease
}

// DeleteKey removes key (its lease expired). Deleting a missing key does nothing.
func (l *MemLog) DeleteKey(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.leases[key]; ok {
		delete(l.leases, key)
		delete(l.created, key)
		l.rev++
	}
}

// Compact forgets history at or before rev as etcd's compaction does: reads at older
// revisions return ErrCompacted and watches from before rev re-read instead.
func (l *MemLog) Compact(rev int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rev > l.rev {
		rev = l.rev
	}
	if rev > l.compacted {
		l.compacted = rev
	}
}

// Corrupt replaces the stored bytes of event seq of stream (test hook for damaged logs).
func (l *MemLog) Corrupt(stream Stream, seq uint64, value []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.streams[stream]
	if st == nil || seq == 0 || seq > uint64(len(st.events)) {
		panic("memlog: Corrupt of an event that does not exist")
	}
	st.events[seq-1].value = append([]byte(nil), value...)
}

// Close ends the log's watches. Closing twice is fine.
func (l *MemLog) Close() error {
	l.close()
	l.wg.Wait()
	return nil
}

func (st *memStream) headAt(rev int64) Version {
	i := sort.Search(len(st.heads), func(i int) bool { return st.heads[i].rev > rev })
	if i == 0 {
		return Version{}
	}
	return st.heads[i-1].v
}

func (st *memStream) head() Version {
	if len(st.heads) == 0 {
		return Version{}
	}
	return st.heads[len(st.heads)-1].v
}

// streamLocked is stream's record, created empty on first use.
func (l *MemLog) streamLocked(stream Stream) *memStream {
	st := l.streams[stream]
	if st == nil {
		st = &memStream{}
		l.streams[stream] = st
	}
	return st
}

// revLocked resolves a requested revision (0: latest) like etcd does.
func (l *MemLog) revLocked(rev int64) (int64, error) {
	switch {
	case rev == 0:
		return l.rev, nil
	case rev > l.rev:
		return 0, errors.Newf("events: revision %d is in the future (latest %d)", rev, l.rev)
	case rev < l.compacted:
		return 0, errors.Wrapf(ErrCompacted, "revision %d (compacted up to %d)", rev, l.compacted)
	}
	return rev, nil
}

// Append implements Log.
func (l *MemLog) Append(ctx context.Context, req AppendRequest) (Version, error) {
	parts, err := sealAll(&req)
	if err != nil {
		return Version{}, err
	}
	if n := len(parts) + len(req.Conditions) + len(req.Guards) + len(req.RangeGuards); n > maxTxnOps || n+len(parts) > maxTxnOps {
		return Version{}, errors.Wrapf(ErrTooLarge, "%d streams, %d conditions and %d guards (at most %d compares)",
			len(parts), len(req.Conditions), len(req.Guards)+len(req.RangeGuards), maxTxnOps)
	}
	for _, c := range req.Conditions {
		if c.Key == "" {
			return Version{}, errors.New("events: append: condition with an empty key")
		}
		if !c.Absent && c.Lease == 0 {
			return Version{}, errors.Newf("events: append: condition on %s needs a lease", c.Key)
		}
	}
	if err := ctx.Err(); err != nil {
		err = errors.Wrapf(err, "append to %s", req.Stream)
		if errors.Is(err, context.DeadlineExceeded) {
			err = errors.Mark(err, ErrUnavailable)
		}
		return Version{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.faultLocked("append"); err != nil {
		return Version{}, err
	}
	for _, c := range req.Conditions {
		lease, ok := l.leases[c.Key]
		switch {
		case c.Absent && ok:
			return Version{}, errors.Wrapf(ErrFenced, "append to %s: %s still exists (lease %x): its holder is alive", req.Stream, c.Key, lease)
		case !c.Absent && !ok:
			return Version{}, errors.Wrapf(ErrFenced, "append to %s: %s is gone (lease %x expired?)", req.Stream, c.Key, c.Lease)
		case !c.Absent && lease != c.Lease:
			return Version{}, errors.Wrapf(ErrFenced, "append to %s: %s is held by lease %x, not %x", req.Stream, c.Key, lease, c.Lease)
		}
	}
	for _, g := range req.Guards {
		if err := g.Stream.Validate(); err != nil {
			return Version{}, errors.Wrap(err, "guard")
		}
		var gv Version
		if gs := l.streams[g.Stream]; gs != nil {
			gv = gs.head()
		}
		if gv != g.Version {
			return Version{}, Conflict(g.Stream, gv)
		}
	}
	for _, g := range req.RangeGuards {
		var names []Stream
		for s, st := range l.streams {
			if strings.HasPrefix(string(s), g.Prefix) && len(st.heads) > 0 && st.heads[len(st.heads)-1].rev > g.Rev {
				names = append(names, s)
			}
		}
		if len(names) > 0 {
			sort.Slice(names, func(i, j int) bool { return names[i] < names[j] })
			return Version{}, errors.Wrapf(Conflict(names[0], l.streams[names[0]].head()), "streams under %q moved after revision %d", g.Prefix, g.Rev)
		}
	}
	for _, p := range parts {
		var cur Version
		if st := l.streams[p.stream]; st != nil {
			cur = st.head()
		}
		if cur != p.expected {
			return Version{}, Conflict(p.stream, cur)
		}
	}
	l.rev++
	for _, p := range parts {
		st := l.streamLocked(p.stream)
		for i, s := range p.sealed {
			st.events = append(st.events, memEvent{rev: l.rev, value: s.Value})
			l.history = append(l.history, memPut{rev: l.rev, stream: p.stream, seq: s.Seq})
			p.events[i].Revision = l.rev
		}
		st.heads = append(st.heads, memHead{rev: l.rev, v: p.head})
		if p.snap > 0 {
			st.snaps = append(st.snaps, memSnap{rev: l.rev, seq: p.snap})
		}
	}
	l.notifyLocked()
	return parts[0].head, nil
}

// Head implements Log.
func (l *MemLog) Head(ctx context.Context, stream Stream) (Version, int64, error) {
	if err := stream.Validate(); err != nil {
		return Version{}, 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.faultLocked("head"); err != nil {
		return Version{}, 0, err
	}
	if st := l.streams[stream]; st != nil {
		return st.head(), l.rev, nil
	}
	return Version{}, l.rev, nil
}

// Streams implements Log.
func (l *MemLog) Streams(ctx context.Context, prefix string, rev int64) (map[Stream]Version, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.faultLocked("streams"); err != nil {
		return nil, 0, err
	}
	rev, err := l.revLocked(rev)
	if err != nil {
		return nil, 0, err
	}
	out := map[Stream]Version{}
	for s, st := range l.streams {
		if !strings.HasPrefix(string(s), prefix) {
			continue
		}
		if v := st.headAt(rev); v.Seq > 0 {
			out[s] = v
		}
	}
	return out, rev, nil
}

// Read implements Log.
func (l *MemLog) Read(ctx context.Context, stream Stream, from uint64, rev int64, fn func(*Event) error) (int64, error) {
	if err := stream.Validate(); err != nil {
		return 0, err
	}
	if from == 0 {
		from = 1
	}
	l.mu.Lock()
	if err := l.faultLocked("read"); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	rev, err := l.revLocked(rev)
	if err != nil {
		l.mu.Unlock()
		return 0, err
	}
	var head Version
	var stored []memEvent
	if st := l.streams[stream]; st != nil {
		head = st.headAt(rev)
		if head.Seq >= from {
			stored = append(stored, st.events[from-1:min(head.Seq, uint64(len(st.events)))]...)
		}
	}
	l.mu.Unlock()
	if head.Seq < from {
		return rev, nil
	}
	chain := Chain{Stream: stream}
	if from == 1 {
		chain.Expect(Version{})
	}
	dec := NewDecoder()
	for i, m := range stored {
		if err := ctx.Err(); err != nil {
			return rev, errors.Wrapf(err, "read %s", stream)
		}
		seq := from + uint64(i)
		if m.value == nil || m.rev > rev { // trimmed (Trim), or put after rev
			return rev, checkTail(stream, from, seq, head, chain.Head())
		}
		if err := chain.deliver(dec, seq, m.value, m.rev, fn); err != nil {
			return rev, err
		}
	}
	return rev, checkTail(stream, from, head.Seq+1, head, chain.Head())
}

// Watch implements Log. An empty Prefixes watches every stream.
func (l *MemLog) Watch(ctx context.Context, req WatchRequest) <-chan WatchBatch {
	return startWatch(ctx, l.base, &l.wg, req, l.watch)
}

func (l *MemLog) watch(ctx context.Context, w *watchState, next int64) error {
	for {
		l.mu.Lock()
		if err := l.faultLocked("watch"); err != nil {
			l.mu.Unlock()
			return err
		}
		if next+1 < l.compacted {
			l.mu.Unlock()
			rev, err := w.catchUp(ctx, l.Streams, l.Read)
			if err != nil {
				return err
			}
			next = rev
			continue
		}
		i := sort.Search(len(l.history), func(i int) bool { return l.history[i].rev > next })
		var raws []rawEvent
		for _, p := range l.history[i:] {
			if matchesAny(w.prefixes, p.stream) {
				raws = append(raws, rawEvent{stream: p.stream, seq: p.seq, rev: p.rev, value: l.streams[p.stream].events[p.seq-1].value})
			}
		}
		next = l.rev
		changed := l.changed
		l.mu.Unlock()
		if err := w.deliverRaw(ctx, raws, l.Read); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
