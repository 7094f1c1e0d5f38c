package events

import (
	"context"
	"sort"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// lastSnapshot returns the sequence of the last Snapshot event of a sealed batch, 0 if
// it holds none.
func lastSnapshot(evs []*Event) uint64 {
	for i := len(evs) - 1; i >= 0; i-- {
		if _, ok := evs[i].Payload.(*Snapshot); ok {
			return evs[i].Seq
		}
	}
	return 0
}

// SnapshotSeq implements Log: one read of the stream's snapshot pointer key at rev.
func (l *EtcdLog) SnapshotSeq(ctx context.Context, stream Stream, rev int64) (uint64, int64, error) {
	if err := stream.Validate(); err != nil {
		return 0, 0, err
	}
	resp, err := l.cli.Get(ctx, l.keys.Snap(stream), withRev(rev))
	if err != nil {
		return 0, 0, l.storeErr(ctx, err, "snapshot pointer of %s", stream)
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	if len(resp.Kvs) == 0 {
		return 0, rev, nil
	}
	seq, err := DecodeSnapSeq(resp.Kvs[0].Value)
	if err != nil {
		return 0, 0, errors.Wrapf(ErrCorrupt, "%s: %v", stream, err)
	}
	return seq, rev, nil
}

// OldestStored returns the sequence of the oldest event of stream still stored at rev
// (0: the latest): 1 for a stream never archived, the sequence of a snapshot for one
// whose older events were archived, 0 for an empty stream. It reads the keys before the
// snapshot pointer only (keys-only, one key), so it costs little on a long stream.
func (l *EtcdLog) OldestStored(ctx context.Context, stream Stream, rev int64) (uint64, int64, error) {
	snap, rev, err := l.SnapshotSeq(ctx, stream, rev)
	if err != nil {
		return 0, 0, err
	}
	end := clientv3.GetPrefixRangeEnd(l.keys.StreamPrefix(stream))
	if snap > 0 {
		end = l.keys.Event(stream, snap+1)
	}
	resp, err := l.cli.Get(ctx, l.keys.Event(stream, 1), clientv3.WithRange(end), clientv3.WithLimit(1),
		clientv3.WithKeysOnly(), withRev(rev))
	if err != nil {
		return 0, 0, l.storeErr(ctx, err, "oldest event of %s", stream)
	}
	if len(resp.Kvs) == 0 {
		return 0, rev, nil
	}
	_, seq, err := l.keys.ParseEvent(string(resp.Kvs[0].Key))
	if err != nil {
		return 0, 0, errors.Mark(err, ErrCorrupt)
	}
	return seq, rev, nil
}

// Client is the etcd client the log uses, for tests that inspect or damage the raw keys
// (tools use the Store operations: no package but events reads or writes a key).
func (l *EtcdLog) Client() *clientv3.Client { return l.cli }

// memSnap is a snapshot pointer value of the in-memory log.
type memSnap struct {
	rev int64
	seq uint64
}

// SnapshotSeq implements Log.
func (l *MemLog) SnapshotSeq(ctx context.Context, stream Stream, rev int64) (uint64, int64, error) {
	if err := stream.Validate(); err != nil {
		return 0, 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.faultLocked("snapshot"); err != nil {
		return 0, 0, err
	}
	rev, err := l.revLocked(rev)
	if err != nil {
		return 0, 0, err
	}
	st := l.streams[stream]
	if st == nil {
		return 0, rev, nil
	}
	i := sort.Search(len(st.snaps), func(i int) bool { return st.snaps[i].rev > rev })
	if i == 0 {
		return 0, rev, nil
	}
	return st.snaps[i-1].seq, rev, nil
}

// StartSeq is where a reader that needs a stream's state, not its history, starts at
// revision rev: the stream's newest snapshot, or 1 when it has none. Reading from there
// costs the tail after the snapshot only, and works on streams whose older events were
// archived (reading those from 1 returns ErrCompacted).
func StartSeq(ctx context.Context, log Log, stream Stream, rev int64) (uint64, error) {
	seq, _, err := log.SnapshotSeq(ctx, stream, rev)
	if err != nil {
		return 0, err
	}
	return max(seq, 1), nil
}

// ReadFrom reads stream at rev from its newest snapshot (StartSeq): the events a fold
// needs to rebuild the stream's state. It returns the revision read at.
func ReadFrom(ctx context.Context, log Log, stream Stream, rev int64, fn func(*Event) error) (int64, error) {
	if rev == 0 {
		var err error
		if _, rev, err = log.Head(ctx, stream); err != nil {
			return 0, err
		}
	}
	from, err := StartSeq(ctx, log, stream, rev)
	if err != nil {
		return 0, err
	}
	return log.Read(ctx, stream, from, rev, fn)
}
