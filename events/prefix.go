package events

import (
	"context"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ReadPrefix implements Log: the heads under prefix at one revision, then the events of
// all those streams in one walk over their keys, ReadChunk keys per request (key order
// is stream order, each stream's events in sequence).
func (l *EtcdLog) ReadPrefix(ctx context.Context, prefix string, rev int64, fn func(*Event) error) (int64, error) {
	heads, rev, err := l.Streams(ctx, prefix, rev)
	if err != nil {
		return 0, err
	}
	if len(heads) == 0 {
		return rev, nil
	}
	r := prefixReader{heads: heads, fn: fn}
	from := l.keys.LogPrefix() + prefix
	end := clientv3.GetPrefixRangeEnd(from)
	dec := NewDecoder()
	for {
		resp, err := l.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(int64(l.chunk)), withRev(rev))
		if err != nil {
			return rev, l.storeErr(ctx, err, "read streams %q at revision %d", prefix, rev)
		}
		for _, kv := range resp.Kvs {
			s, seq, err := l.keys.ParseEvent(string(kv.Key))
			if err != nil {
				return rev, errors.Mark(err, ErrCorrupt)
			}
			ev, err := dec.Decode(s, seq, kv.Value)
			if err != nil {
				return rev, err
			}
			ev.Revision = kv.ModRevision
			if err := r.next(ev); err != nil {
				return rev, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return rev, r.done()
}

// ReadPrefix implements Log.
func (l *MemLog) ReadPrefix(ctx context.Context, prefix string, rev int64, fn func(*Event) error) (int64, error) {
	heads, rev, err := l.Streams(ctx, prefix, rev)
	if err != nil {
		return 0, err
	}
	names := make([]string, 0, len(heads))
	for s := range heads {
		names = append(names, string(s))
	}
	// The key order of EtcdLog: the stream's name and "/" then the sequence, so
	// "block/p/1" comes before "block/p/10" ('/' < '0').
	sort.Slice(names, func(i, j int) bool { return names[i]+"/" < names[j]+"/" })
	r := prefixReader{heads: heads, fn: fn}
	for _, s := range names {
		if _, err := l.Read(ctx, Stream(s), 1, rev, r.next); err != nil {
			return rev, err
		}
	}
	return rev, r.done()
}

// prefixReader checks the events of many streams read in one walk: each stream's chain
// from its first stored event (#1, or a Snapshot once earlier events were archived) to
// the head read before the walk.
type prefixReader struct {
	heads map[Stream]Version
	fn    func(*Event) error
	cur   Stream
	chain Chain
	seen  map[Stream]bool
}

func (r *prefixReader) next(e *Event) error {
	if e.Stream != r.cur {
		if err := r.endStream(); err != nil {
			return err
		}
		head, ok := r.heads[e.Stream]
		if !ok || e.Seq > head.Seq {
			// Written after the heads were read? Not at one revision: a stray key.
			return errors.Wrapf(ErrCorrupt, "%s #%d: stored past its head #%d", e.Stream, e.Seq, head.Seq)
		}
		if r.seen == nil {
			r.seen = map[Stream]bool{}
		}
		r.cur, r.chain = e.Stream, Chain{Stream: e.Stream}
		r.seen[e.Stream] = true
		switch _, snap := e.Payload.(*Snapshot); {
		case e.Seq == 1:
			r.chain.Expect(Version{})
		case !snap:
			return errors.Wrapf(ErrCompacted, "%s: events before #%d were archived and #%d is no snapshot to start from", e.Stream, e.Seq, e.Seq)
		}
	}
	if err := r.chain.Next(e); err != nil {
		return err
	}
	return r.fn(e)
}

func (r *prefixReader) endStream() error {
	if r.cur == "" {
		return nil
	}
	head, last := r.heads[r.cur], r.chain.Head()
	if last != head {
		return errors.Wrapf(ErrChainBroken, "%s: head is #%d but the stored events end at #%d", r.cur, head.Seq, last.Seq)
	}
	return nil
}

func (r *prefixReader) done() error {
	if err := r.endStream(); err != nil {
		return err
	}
	if len(r.seen) != len(r.heads) {
		var missing []string
		for s := range r.heads {
			if !r.seen[s] {
				missing = append(missing, string(s))
			}
		}
		sort.Strings(missing)
		return errors.Wrapf(ErrCompacted, "%d of %d streams have a head but no stored events: %s", len(missing), len(r.heads), strings.Join(missing[:min(3, len(missing))], ", "))
	}
	return nil
}
