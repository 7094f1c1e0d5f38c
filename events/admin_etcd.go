package events

import (
	"context"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Prefix implements Store.
func (l *EtcdLog) Prefix() string { return l.keys.Prefix() }

// guardCmps turns g into transaction comparisons: a prefix comparison that holds while
// no liveness key was created after the revision (etcd applies it to every key in the
// range, and to an absent key's zero values when there is none).
func (l *EtcdLog) guardCmps(g BulkGuard) []clientv3.Cmp {
	if g.NoNodeStartedAfter <= 0 {
		return nil
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(l.keys.Alive("")), "<", g.NoNodeStartedAfter+1).WithPrefix()}
}

// guardHolds re-checks g alone, to tell a failed guard from another failed comparison.
func (l *EtcdLog) guardHolds(ctx context.Context, g BulkGuard) (bool, error) {
	cmps := l.guardCmps(g)
	if len(cmps) == 0 {
		return true, nil
	}
	r, err := l.cli.Txn(ctx).If(cmps...).Commit()
	if err != nil {
		return false, l.storeErr(ctx, err, "check that no node started since revision %d", g.NoNodeStartedAfter)
	}
	return r.Succeeded, nil
}

// Count implements Store: one count-only range read per kind of key.
func (l *EtcdLog) Count(ctx context.Context, rev int64) (Counts, error) {
	var c Counts
	for _, k := range []struct {
		prefix string
		n      *int64
	}{{l.keys.LogPrefix(), &c.Events}, {l.keys.HeadPrefix(), &c.Streams}, {l.keys.Prefix() + "snap/", &c.Snapshots}, {l.keys.IndexPrefix(), &c.Index}} {
		r, err := l.cli.Get(ctx, k.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly(), withRev(rev))
		if err != nil {
			return c, l.storeErr(ctx, err, "count the keys under %s", k.prefix)
		}
		*k.n = r.Count
	}
	return c, nil
}

// Clear implements Store in one transaction.
func (l *EtcdLog) Clear(ctx context.Context, log bool, g BulkGuard) error {
	ops := []clientv3.Op{clientv3.OpDelete(l.keys.IndexPrefix(), clientv3.WithPrefix())}
	if log {
		for _, p := range []string{l.keys.LogPrefix(), l.keys.HeadPrefix(), l.keys.Prefix() + "snap/"} {
			ops = append(ops, clientv3.OpDelete(p, clientv3.WithPrefix()))
		}
	}
	resp, err := l.cli.Txn(ctx).If(l.guardCmps(g)...).Then(ops...).Commit()
	if err != nil {
		return l.storeErr(ctx, err, "delete the log under %s", l.keys.Prefix())
	}
	if !resp.Succeeded {
		return errors.Wrapf(ErrNodeStarted, "nothing deleted under %s", l.keys.Prefix())
	}
	return nil
}

// PutEvents implements Store in one transaction of puts.
func (l *EtcdLog) PutEvents(ctx context.Context, evs []StoredEvent) error {
	if err := checkStoredEvents(evs); err != nil {
		return err
	}
	ops := make([]clientv3.Op, len(evs))
	for i, e := range evs {
		ops[i] = clientv3.OpPut(l.keys.Event(e.Stream, e.Seq), string(e.Value))
	}
	if _, err := l.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return l.storeErr(ctx, err, "put %d events", len(evs))
	}
	return nil
}

// InitHeads implements Store.
func (l *EtcdLog) InitHeads(ctx context.Context, heads []StreamInit, g BulkGuard) error {
	if err := checkInits(heads); err != nil {
		return err
	}
	for len(heads) > 0 {
		step := heads[:min(initHeadsStep, len(heads))]
		heads = heads[len(step):]
		cmps := l.guardCmps(g)
		var ops []clientv3.Op
		for _, h := range step {
			hk := l.keys.Head(h.Stream)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(hk), "=", 0))
			ops = append(ops, clientv3.OpPut(hk, string(EncodeHead(h.Head))))
			if h.Snapshot > 0 {
				ops = append(ops, clientv3.OpPut(l.keys.Snap(h.Stream), string(EncodeSnapSeq(h.Snapshot))))
			}
		}
		resp, err := l.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return l.storeErr(ctx, err, "write the heads of %d streams", len(step))
		}
		if resp.Succeeded {
			continue
		}
		ok, err := l.guardHolds(ctx, g)
		if err != nil {
			return err
		}
		if !ok {
			return errors.Wrap(ErrNodeStarted, "write heads")
		}
		return errors.Wrapf(ErrConflict, "write heads: a head among %s..%s exists", step[0].Stream, step[len(step)-1].Stream)
	}
	return nil
}

// Trim implements Store in one transaction.
func (l *EtcdLog) Trim(ctx context.Context, stream Stream, from, to, keep uint64, keepRev int64) (int64, error) {
	if err := checkTrim(stream, from, to, keep); err != nil {
		return 0, err
	}
	keepKey := l.keys.Event(stream, keep)
	resp, err := l.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(keepKey), "=", keepRev)).
		Then(clientv3.OpDelete(l.keys.Event(stream, from), clientv3.WithRange(l.keys.Event(stream, to)))).
		Commit()
	if err != nil {
		return 0, l.storeErr(ctx, err, "trim %s #%d-#%d", stream, from, to-1)
	}
	if !resp.Succeeded {
		return 0, errors.Wrapf(ErrConflict, "trim %s: #%d is no longer the event stored at revision %d", stream, keep, keepRev)
	}
	return resp.Responses[0].GetResponseDeleteRange().Deleted, nil
}

// StoredValues implements Store: point reads in transactions of up to 127.
func (l *EtcdLog) StoredValues(ctx context.Context, stream Stream, seqs []uint64, rev int64) ([][]byte, error) {
	if err := stream.Validate(); err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(seqs))
	for lo := 0; lo < len(seqs); lo += maxTxnOps - 1 {
		part := seqs[lo:min(len(seqs), lo+maxTxnOps-1)]
		ops := make([]clientv3.Op, len(part))
		for i, s := range part {
			ops[i] = clientv3.OpGet(l.keys.Event(stream, s), withRev(rev))
		}
		r, err := l.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, l.storeErr(ctx, err, "read %d events of %s at revision %d", len(part), stream, rev)
		}
		for _, rr := range r.Responses {
			var v []byte
			if kvs := rr.GetResponseRange().Kvs; len(kvs) == 1 {
				v = kvs[0].Value
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// IndexEntries implements Store in one range read.
func (l *EtcdLog) IndexEntries(ctx context.Context, stream Stream, rev int64, keysOnly bool) ([]IndexValue, error) {
	prefix := l.keys.IndexPrefix()
	if stream != "" {
		prefix = l.keys.IndexStreamPrefix(stream)
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), withRev(rev)}
	if keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	resp, err := l.cli.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, l.storeErr(ctx, err, "read the index entries under %s", prefix)
	}
	out := make([]IndexValue, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		s, first, perr := l.keys.ParseIndex(string(kv.Key))
		if perr != nil {
			continue // not an entry key: nothing a reader could use
		}
		out = append(out, IndexValue{Stream: s, First: first, Value: kv.Value})
	}
	return out, nil
}

// PutIndex implements Store.
func (l *EtcdLog) PutIndex(ctx context.Context, stream Stream, first uint64, value []byte) (bool, error) {
	if err := stream.Validate(); err != nil {
		return false, err
	}
	key := l.keys.Index(stream, first)
	r, err := l.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).Commit()
	if err != nil {
		return false, l.storeErr(ctx, err, "write %s", key)
	}
	return r.Succeeded, nil
}

// DeleteIndex implements Store.
func (l *EtcdLog) DeleteIndex(ctx context.Context, stream Stream, firsts []uint64) (int64, error) {
	if firsts == nil {
		prefix := l.keys.IndexPrefix()
		if stream != "" {
			prefix = l.keys.IndexStreamPrefix(stream)
		}
		r, err := l.cli.Delete(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return 0, l.storeErr(ctx, err, "delete %s", prefix)
		}
		return r.Deleted, nil
	}
	if err := stream.Validate(); err != nil {
		return 0, err
	}
	var n int64
	for lo := 0; lo < len(firsts); lo += maxTxnOps {
		part := firsts[lo:min(len(firsts), lo+maxTxnOps)]
		ops := make([]clientv3.Op, len(part))
		for i, f := range part {
			ops[i] = clientv3.OpDelete(l.keys.Index(stream, f))
		}
		r, err := l.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return n, l.storeErr(ctx, err, "delete %d index entries of %s", len(part), stream)
		}
		for _, rr := range r.Responses {
			n += rr.GetResponseDeleteRange().Deleted
		}
	}
	return n, nil
}
