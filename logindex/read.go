package logindex

import (
	"context"
	"sort"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
)

// readPage is the most events one range read of ReadRange fetches.
const readPage = 4096

// maxTxnOps is etcd's default limit of operations in one transaction.
const maxTxnOps = 128

// storeErr wraps an etcd error, marking a compacted revision as events.ErrCompacted.
func storeErr(err error, format string, args ...any) error {
	err = errors.Wrapf(err, format, args...)
	if errors.Is(err, rpctypes.ErrCompacted) {
		return errors.Mark(err, events.ErrCompacted)
	}
	return err
}

// Load returns the index entries of stream, or of every node stream when stream is "",
// as stored at revision rev (0: the latest), in one range read, each stream's sorted by
// first sequence. Entries that do not decode are left out (they only mean "read these
// events"); nothing stored returns an empty map.
func Load(ctx context.Context, cli *clientv3.Client, keys events.Keys, stream events.Stream, rev int64) (map[events.Stream][]*Entry, error) {
	prefix := keys.IndexPrefix() + "node/"
	if stream != "" {
		prefix = keys.IndexStreamPrefix(stream)
	}
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, storeErr(err, "logindex: load %s at revision %d", prefix, rev)
	}
	out := map[events.Stream][]*Entry{}
	for _, kv := range resp.Kvs {
		s, first, perr := keys.ParseIndex(string(kv.Key))
		if perr != nil {
			continue
		}
		e, derr := Decode(s, kv.Value)
		if derr != nil || e.First != first {
			continue
		}
		out[s] = append(out[s], e)
	}
	for _, es := range out {
		sort.Slice(es, func(i, j int) bool { return es[i].First < es[j].First })
	}
	return out, nil
}

// Verify returns the entries of stream whose Hash is the hash of the event stored at
// their Last at revision rev (the entries still describe this log), in their order, and
// whether the stream's event #1 is stored (false: its early events were archived). It
// reads those events in transactions of up to 127 point reads.
func Verify(ctx context.Context, cli *clientv3.Client, keys events.Keys, stream events.Stream, entries []*Entry, rev int64) ([]*Entry, bool, error) {
	ops := []clientv3.Op{clientv3.OpGet(keys.Event(stream, 1), clientv3.WithKeysOnly(), clientv3.WithRev(rev))}
	for _, e := range entries {
		ops = append(ops, clientv3.OpGet(keys.Event(stream, e.Last), clientv3.WithRev(rev)))
	}
	var resps []*clientv3.GetResponse
	for lo := 0; lo < len(ops); lo += maxTxnOps - 1 {
		r, err := cli.Txn(ctx).Then(ops[lo:min(len(ops), lo+maxTxnOps-1)]...).Commit()
		if err != nil {
			return nil, false, storeErr(err, "logindex: verify the entries of %s at revision %d", stream, rev)
		}
		for _, rr := range r.Responses {
			resps = append(resps, (*clientv3.GetResponse)(rr.GetResponseRange()))
		}
	}
	hasFirst := len(resps[0].Kvs) == 1
	var ok []*Entry
	for i, e := range entries {
		kvs := resps[i+1].Kvs
		if len(kvs) == 1 && events.HashOf(stream, e.Last, kvs[0].Value) == e.Hash {
			ok = append(ok, e)
		}
	}
	return ok, hasFirst, nil
}

// Segment is a range of a stream's sequences: covered by an index entry, or not indexed
// (Entry nil: its events must be read).
type Segment struct {
	First, Last uint64
	Entry       *Entry
}

// Segments cuts [from, head] into segments: each entry (sorted by First) that lies
// within it and starts after the previous segment becomes one, and every gap between
// them (missing chunks, entries that overlap an earlier one, the tail after the last
// entry) an unindexed segment. Entries outside [from, head] are ignored. The segments are
// in sequence order and cover [from, head] exactly.
func Segments(entries []*Entry, from, head uint64) []Segment {
	var out []Segment
	next := max(from, 1)
	for _, e := range entries {
		if e.First < next || e.Last > head {
			continue
		}
		if e.First > next {
			out = append(out, Segment{First: next, Last: e.First - 1})
		}
		out = append(out, Segment{First: e.First, Last: e.Last, Entry: e})
		next = e.Last + 1
	}
	if next <= head {
		out = append(out, Segment{First: next, Last: head})
	}
	return out
}

// ReadRange is events.EtcdLog.ReadRange on the log under keys: it calls fn for each event
// of stream with sequence first..last, in order, as stored at revision rev (which must be
// a revision, not 0), reading at most 4096 events per range read. Events are decoded and
// their hash chain checked within the range, and against prev (the version of event
// first-1) when prev is given, or the empty stream when first is 1. It returns the version
// of event last. A missing event first returns events.ErrCompacted (archived); a gap or a
// missing end, events.ErrChainBroken; fn's error stops the read and is returned as is.
func ReadRange(ctx context.Context, cli *clientv3.Client, keys events.Keys, stream events.Stream, first, last uint64, rev int64,
	prev *events.Version, fn func(*events.Event) error) (events.Version, error) {
	if first == 0 || last < first || rev <= 0 {
		return events.Version{}, errors.Wrapf(ErrBadChunk, "read %s #%d-#%d at revision %d", stream, first, last, rev)
	}
	lg := events.NewEtcdLog(cli, events.EtcdConfig{Prefix: keys.Prefix(), ReadChunk: readPage})
	defer lg.Close()
	return lg.ReadRange(ctx, stream, first, last, rev, prev, fn)
}
