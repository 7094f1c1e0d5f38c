package events

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxTxnOps is etcd's default limit of operations per transaction, counted separately
// for compares, success ops and failure ops.
const maxTxnOps = 128

// DefaultReadChunk is how many events Read asks etcd for at once.
const DefaultReadChunk = 10000

// EtcdConfig configures an EtcdLog.
type EtcdConfig struct {
	// Prefix of every key ("" means DefaultPrefix).
	Prefix string
	// Logger for the log's own notes (compaction recovery); nil discards them.
	Logger *slog.Logger
	// ReadChunk is the number of events fetched per request by Read; 0 means DefaultReadChunk.
	ReadChunk int
	// WatchResumeFor bounds how long a watch keeps resuming while etcd says "not now"
	// (see Watch); 0 means DefaultWatchResumeFor.
	WatchResumeFor time.Duration
}

// EtcdLog is the Log kept in etcd (key layout: see Keys). It is safe for concurrent use.
type EtcdLog struct {
	cli    *clientv3.Client
	keys   Keys
	log    *slog.Logger
	chunk  int
	resume time.Duration // EtcdConfig.WatchResumeFor

	base  context.Context // cancelled by Close
	close context.CancelFunc
	wg    sync.WaitGroup
}

var _ Log = (*EtcdLog)(nil)

// NewEtcdLog returns the log stored in etcd through cli. The caller keeps ownership of cli
// (Close does not close it).
func NewEtcdLog(cli *clientv3.Client, cfg EtcdConfig) *EtcdLog {
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	chunk := cfg.ReadChunk
	if chunk <= 0 {
		chunk = DefaultReadChunk
	}
	resume := cfg.WatchResumeFor
	if resume <= 0 {
		resume = DefaultWatchResumeFor
	}
	base, cancel := context.WithCancel(context.Background())
	return &EtcdLog{cli: cli, keys: NewKeys(cfg.Prefix), log: lg, chunk: chunk, resume: resume, base: base, close: cancel}
}

// Keys returns the key layout the log uses.
func (l *EtcdLog) Keys() Keys { return l.keys }

// Close stops the log's watches and waits for them to end. It does not close the client.
// Closing twice is fine.
func (l *EtcdLog) Close() error {
	l.close()
	l.wg.Wait()
	return nil
}

// storeErr classifies an etcd client error: compaction becomes ErrCompacted, an
// unreachable or leaderless etcd (or a deadline passed while waiting for it) becomes
// ErrUnavailable with advice; the caller's own cancellation is returned wrapped as is.
func (l *EtcdLog) storeErr(ctx context.Context, err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrGRPCPermissionDenied) {
		return errors.Mark(errors.Wrapf(err, format+" refused by etcd's RBAC for these credentials: a node's role "+
			"may write only its own stream node/NODE, its liveness key and the pool streams (check the Common Name "+
			"of --etcd-cert and `coilctl etcd roles`, docs/operations.md)", args...), ErrPermissionDenied)
	}
	err = errors.Wrapf(err, format, args...)
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return errors.Mark(err, ErrCompacted)
	case errors.Is(err, context.Canceled) && ctx.Err() == context.Canceled:
		return err
	}
	if Transient(err) || errors.Is(err, clientv3.ErrNoAvailableEndpoints) || errors.Is(err, context.Canceled) {
		return errors.Mark(errors.Wrapf(err, "etcd at %s unreachable (is etcd running? check --etcd-endpoints)",
			strings.Join(l.cli.Endpoints(), ",")), ErrUnavailable)
	}
	return err
}

// Transient reports whether err, from a call to etcd through clientv3 (not one of the
// log's), is etcd saying "not now" (transientServerError) or a call's deadline passing:
// the call may be tried again. For callers outside the log that talk to etcd directly
// (coild's liveness key and lease).
func Transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || transientServerError(err)
}

// transientServerError reports whether err is etcd saying "not now": a gRPC status or
// an etcd server error (rpctypes.EtcdError: the client turns the server's statuses into
// these, which carry the code but are not gRPC statuses) with code Unavailable (no
// leader, leader changed, server stopped, every "request timed out" variant, unhealthy
// cluster) or DeadlineExceeded, or the server's "too many requests". Every one of them
// may be retried: an append is conditioned on the stream head, so a retry after an
// unknown outcome commits once or conflicts and catches up.
func transientServerError(err error) bool {
	code := status.Code(errors.UnwrapAll(err))
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded || errors.Is(err, rpctypes.ErrTooManyRequests)
}

func withRev(rev int64) clientv3.OpOption { return clientv3.WithRev(rev) }

// Append implements Log. It runs one etcd transaction: compare each written stream's
// head's stored value (sequence and hash) with its expected version (for an empty stream:
// the head key does not exist), each condition, guard and range guard; then put every
// event and the new heads.
func (l *EtcdLog) Append(ctx context.Context, req AppendRequest) (Version, error) {
	parts, err := sealAll(&req)
	if err != nil {
		return Version{}, err
	}
	ncmp := len(parts) + len(req.Conditions) + len(req.Guards) + len(req.RangeGuards)
	if req.NoNodeStartedSince != 0 {
		ncmp++
	}
	if ncmp > maxTxnOps || ncmp+len(parts) > maxTxnOps {
		return Version{}, errors.Wrapf(ErrTooLarge, "%d streams, %d conditions and %d guards (at most %d compares)",
			len(parts), len(req.Conditions), len(req.Guards)+len(req.RangeGuards), maxTxnOps)
	}
	cmps := make([]clientv3.Cmp, 0, ncmp)
	failOps := make([]clientv3.Op, 0, ncmp+len(parts))
	headCmp := func(key string, v Version) clientv3.Cmp {
		if v.Seq == 0 {
			return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		return clientv3.Compare(clientv3.Value(key), "=", string(EncodeHead(v)))
	}
	for _, p := range parts {
		hk := l.keys.Head(p.stream)
		cmps = append(cmps, headCmp(hk, p.expected))
		failOps = append(failOps, clientv3.OpGet(hk))
	}
	for _, c := range req.Conditions {
		if c.Key == "" {
			return Version{}, errors.New("events: append: condition with an empty key")
		}
		if c.Absent {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(c.Key), "=", 0))
		} else {
			if c.Lease == 0 {
				return Version{}, errors.Newf("events: append: condition on %s needs a lease", c.Key)
			}
			cmps = append(cmps, clientv3.Compare(clientv3.LeaseValue(c.Key), "=", clientv3.LeaseID(c.Lease)))
		}
		failOps = append(failOps, clientv3.OpGet(c.Key)) // not keys-only: the lease is needed to tell what failed
	}
	for _, g := range req.Guards {
		if err = g.Stream.Validate(); err != nil {
			return Version{}, errors.Wrap(err, "guard")
		}
		gk := l.keys.Head(g.Stream)
		cmps = append(cmps, headCmp(gk, g.Version))
		failOps = append(failOps, clientv3.OpGet(gk))
	}
	for _, g := range req.RangeGuards {
		// Every head under the prefix last written at or before g.Rev (no key at all is
		// fine: a compare over an empty range holds).
		gk := l.keys.HeadPrefix() + g.Prefix
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(gk), "<", g.Rev+1).WithPrefix())
		failOps = append(failOps, clientv3.OpGet(gk, clientv3.WithPrefix(), clientv3.WithMinModRev(g.Rev+1), clientv3.WithLimit(1)))
	}
	if req.NoNodeStartedSince != 0 {
		cmps = append(cmps, l.guardCmps(BulkGuard{NoNodeStartedAfter: req.NoNodeStartedSince})...)
		failOps = append(failOps, clientv3.OpGet(l.keys.Alive(""), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithMinCreateRev(req.NoNodeStartedSince+1)))
	}
	// On a conflict, also read the events the writer missed (up to a batch) of each
	// stream, so a loser can catch up without another round trip.
	for _, p := range parts {
		failOps = append(failOps, clientv3.OpGet(l.keys.Event(p.stream, p.expected.Seq+1),
			clientv3.WithRange(l.keys.Event(p.stream, min(p.expected.Seq+1+MaxBatch, MaxSeq)))))
	}
	ops := make([]clientv3.Op, 0, maxTxnOps)
	for _, p := range parts {
		for _, s := range p.sealed {
			ops = append(ops, clientv3.OpPut(l.keys.Event(p.stream, s.Seq), string(s.Value)))
		}
		ops = append(ops, clientv3.OpPut(l.keys.Head(p.stream), string(EncodeHead(p.head))))
		if p.snap > 0 {
			ops = append(ops, clientv3.OpPut(l.keys.Snap(p.stream), string(EncodeSnapSeq(p.snap))))
		}
	}

	resp, err := l.cli.Txn(ctx).If(cmps...).Then(ops...).Else(failOps...).Commit()
	if err != nil {
		return Version{}, l.storeErr(ctx, err, "append to %s", req.Stream)
	}
	if !resp.Succeeded {
		return Version{}, l.appendFailure(req, parts, resp)
	}
	for _, p := range parts {
		for _, e := range p.events {
			e.Revision = resp.Header.Revision
		}
	}
	return parts[0].head, nil
}

// appendFailure tells which compare of a failed append failed, from the failure ops' reads.
func (l *EtcdLog) appendFailure(req AppendRequest, parts []sealedPart, resp *clientv3.TxnResponse) error {
	rs := resp.Responses
	heads := make([]Version, len(parts))
	for i, p := range parts {
		if kvs := rs[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
			v, err := DecodeHead(kvs[0].Value)
			if err != nil {
				return errors.Wrapf(ErrCorrupt, "%s: head: %v", p.stream, err)
			}
			heads[i] = v
		}
	}
	rs = rs[len(parts):]
	for i, c := range req.Conditions {
		kvs := rs[i].GetResponseRange().GetKvs()
		switch {
		case c.Absent && len(kvs) > 0:
			return errors.Wrapf(ErrFenced, "append to %s: %s still exists (lease %x): its holder is alive", req.Stream, c.Key, kvs[0].Lease)
		case !c.Absent && len(kvs) == 0:
			return errors.Wrapf(ErrFenced, "append to %s: %s is gone (lease %x expired?)", req.Stream, c.Key, c.Lease)
		case !c.Absent && kvs[0].Lease != c.Lease:
			return errors.Wrapf(ErrFenced, "append to %s: %s is held by lease %x, not %x", req.Stream, c.Key, kvs[0].Lease, c.Lease)
		}
	}
	rs = rs[len(req.Conditions):]
	for i, g := range req.Guards {
		var gv Version
		if kvs := rs[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
			v, err := DecodeHead(kvs[0].Value)
			if err != nil {
				return errors.Wrapf(ErrCorrupt, "%s: head: %v", g.Stream, err)
			}
			gv = v
		}
		if gv != g.Version {
			return Conflict(g.Stream, gv)
		}
	}
	rs = rs[len(req.Guards):]
	for i, g := range req.RangeGuards {
		if kvs := rs[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
			s, err := l.keys.ParseHead(string(kvs[0].Key))
			if err != nil {
				return errors.Mark(err, ErrCorrupt)
			}
			v, err := DecodeHead(kvs[0].Value)
			if err != nil {
				return errors.Wrapf(ErrCorrupt, "%s: head: %v", s, err)
			}
			return errors.Wrapf(Conflict(s, v), "streams under %q moved after revision %d", g.Prefix, g.Rev)
		}
	}
	rs = rs[len(req.RangeGuards):]
	if req.NoNodeStartedSince != 0 {
		if kvs := rs[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			var names []string
			for _, kv := range kvs {
				names = append(names, strings.TrimPrefix(string(kv.Key), l.keys.Alive("")))
			}
			return errors.Wrapf(ErrConflict, "append to %s: a coild started after revision %d (node %s): list the live nodes again",
				req.Stream, req.NoNodeStartedSince, strings.Join(names, ", "))
		}
		rs = rs[1:]
	}
	for i, p := range parts {
		if heads[i] != p.expected {
			missed := l.decodeMissed(p.stream, p.expected, heads[i], rs[i].GetResponseRange().GetKvs())
			return ConflictWith(p.stream, heads[i], missed)
		}
	}
	// Every compare read back as expected: the state changed between the compare and
	// the reads? Not in one transaction; treat it as a plain conflict.
	return Conflict(req.Stream, heads[0])
}

// decodeMissed decodes the events a losing writer missed, if they chain onto its head;
// otherwise (too many, or anything odd) it returns nil and the writer reads.
func (l *EtcdLog) decodeMissed(stream Stream, from, head Version, kvs []*mvccpb.KeyValue) []*Event {
	if head.Seq <= from.Seq || uint64(len(kvs)) != head.Seq-from.Seq {
		return nil
	}
	c := Chain{Stream: stream}
	c.Expect(from)
	out := make([]*Event, 0, len(kvs))
	for _, kv := range kvs {
		s, seq, err := l.keys.ParseEvent(string(kv.Key))
		if err != nil || s != stream {
			return nil
		}
		e, err := Decode(stream, seq, kv.Value)
		if err != nil || c.Next(e) != nil {
			return nil
		}
		e.Revision = kv.ModRevision
		out = append(out, e)
	}
	if c.Head() != head {
		return nil
	}
	return out
}

// Head implements Log.
func (l *EtcdLog) Head(ctx context.Context, stream Stream) (Version, int64, error) {
	if err := stream.Validate(); err != nil {
		return Version{}, 0, err
	}
	resp, err := l.cli.Get(ctx, l.keys.Head(stream))
	if err != nil {
		return Version{}, 0, l.storeErr(ctx, err, "head of %s", stream)
	}
	if len(resp.Kvs) == 0 {
		return Version{}, resp.Header.Revision, nil
	}
	v, err := DecodeHead(resp.Kvs[0].Value)
	if err != nil {
		return Version{}, 0, errors.Wrapf(ErrCorrupt, "%s: head: %v", stream, err)
	}
	return v, resp.Header.Revision, nil
}

// Streams implements Log with one range read of the head keys.
func (l *EtcdLog) Streams(ctx context.Context, prefix string, rev int64) (map[Stream]Version, int64, error) {
	resp, err := l.cli.Get(ctx, l.keys.HeadPrefix()+prefix, clientv3.WithPrefix(), withRev(rev))
	if err != nil {
		return nil, 0, l.storeErr(ctx, err, "list streams %q", prefix)
	}
	if rev == 0 {
		rev = resp.Header.Revision // etcd's header holds the latest revision, not the one read at
	}
	out := make(map[Stream]Version, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		s, err := l.keys.ParseHead(string(kv.Key))
		if err != nil {
			return nil, 0, errors.Mark(err, ErrCorrupt)
		}
		v, err := DecodeHead(kv.Value)
		if err != nil {
			return nil, 0, errors.Wrapf(ErrCorrupt, "%s: head: %v", s, err)
		}
		out[s] = v
	}
	return out, rev, nil
}

type readChunk struct {
	kvs []*mvccpb.KeyValue
	err error
}

// Read implements Log. It reads the head at rev, then the events in key ranges of
// ReadChunk sequences (so etcd never counts the rest of a long stream), all pinned to the
// same revision, fetching the next chunk while the current one is decoded.
func (l *EtcdLog) Read(ctx context.Context, stream Stream, from uint64, rev int64, fn func(*Event) error) (int64, error) {
	if err := stream.Validate(); err != nil {
		return 0, err
	}
	if from == 0 {
		from = 1
	}
	resp, err := l.cli.Get(ctx, l.keys.Head(stream), withRev(rev))
	if err != nil {
		return 0, l.storeErr(ctx, err, "read %s", stream)
	}
	if rev == 0 {
		rev = resp.Header.Revision // etcd's header holds the latest revision, not the one read at
	}
	if len(resp.Kvs) == 0 {
		return rev, nil
	}
	head, err := DecodeHead(resp.Kvs[0].Value)
	if err != nil {
		return rev, errors.Wrapf(ErrCorrupt, "%s: head: %v", stream, err)
	}
	if head.Seq < from {
		return rev, nil
	}

	chain := Chain{Stream: stream}
	if from == 1 {
		chain.Expect(Version{})
	}
	next, err := l.readSeqs(ctx, stream, from, head.Seq, false, rev, &chain, fn)
	if err != nil {
		return rev, err
	}
	return rev, checkTail(stream, from, next, head, chain.Head())
}

// readSeqs calls fn for the stored events of stream from sequence from, as of revision
// rev, in chunks up to to, fetching the next chunk while the current one is decoded: the
// last chunk ends at to when bounded, else it runs to the end of the stream's keys (so
// Read sees events stored past the head it read). Each event is checked against chain. A
// first stored event after from is ErrCompacted (archived). It returns the sequence after
// the last event delivered (from if none).
func (l *EtcdLog) readSeqs(ctx context.Context, stream Stream, from, to uint64, bounded bool, rev int64, chain *Chain, fn func(*Event) error) (uint64, error) {
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	chunks := make(chan readChunk, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(chunks)
		for lo := from; lo <= to; lo += uint64(l.chunk) {
			hi := lo + uint64(l.chunk)
			end := clientv3.GetPrefixRangeEnd(l.keys.StreamPrefix(stream))
			switch {
			case hi <= to:
				end = l.keys.Event(stream, hi)
			case bounded && to < MaxSeq:
				end = l.keys.Event(stream, to+1)
			}
			r, err := l.cli.Get(cctx, l.keys.Event(stream, lo), clientv3.WithRange(end), withRev(rev))
			var c readChunk
			if err != nil {
				c.err = l.storeErr(ctx, err, "read %s from #%d at revision %d", stream, lo, rev)
			} else {
				c.kvs = r.Kvs
			}
			select {
			case chunks <- c:
			case <-cctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()

	next := from
	dec := NewDecoder()
	prefix := l.keys.StreamPrefix(stream)
	for c := range chunks {
		if c.err != nil {
			return next, c.err
		}
		for _, kv := range c.kvs {
			seq, ok := seqOfKey(kv.Key, prefix)
			if !ok {
				return next, errors.Wrapf(ErrCorrupt, "%s: stray key %q in the stream's range", stream, kv.Key)
			}
			if seq != next && next == from {
				return next, errors.Wrapf(ErrCompacted, "%s: events before #%d were archived (read asked from #%d)", stream, seq, from)
			}
			if err := chain.deliver(dec, seq, kv.Value, kv.ModRevision, fn); err != nil {
				return next, err
			}
			next = seq + 1
		}
	}
	if err := ctx.Err(); err != nil {
		return next, l.storeErr(ctx, err, "read %s", stream)
	}
	return next, nil
}

// ReadRange calls fn for each event of stream with sequence first..last, in order, as
// stored at revision rev (a revision, not 0), like Read but bounded at last and with the
// chain checked against prev (the version of event first-1) when given, or against the
// empty stream when first is 1. It returns the version of event last. A missing event
// first returns ErrCompacted (archived); a gap or a missing end, ErrChainBroken; fn's
// error stops the read and is returned as is.
func (l *EtcdLog) ReadRange(ctx context.Context, stream Stream, first, last uint64, rev int64, prev *Version, fn func(*Event) error) (Version, error) {
	if err := stream.Validate(); err != nil {
		return Version{}, err
	}
	chain := rangeChain(stream, first, prev)
	next, err := l.readSeqs(ctx, stream, first, last, true, rev, &chain, fn)
	if err != nil {
		return Version{}, err
	}
	return chain.Head(), checkRangeEnd(stream, first, last, next)
}

// rangeChain is the chain check of a ReadRange from first: primed with the empty stream
// when first is 1, with prev when it is the version of event first-1.
func rangeChain(stream Stream, first uint64, prev *Version) Chain {
	chain := Chain{Stream: stream}
	switch {
	case first == 1:
		chain.Expect(Version{})
	case prev != nil && prev.Seq == first-1:
		chain.Expect(*prev)
	}
	return chain
}

// checkRangeEnd checks that a ReadRange of first..last ended at last (next is the
// sequence after the last event read).
func checkRangeEnd(stream Stream, first, last, next uint64) error {
	switch {
	case next == first:
		return errors.Wrapf(ErrCompacted, "%s: events #%d-#%d are not stored (archived?)", stream, first, last)
	case next != last+1:
		return errors.Wrapf(ErrChainBroken, "%s: events end at #%d, want #%d", stream, next-1, last)
	}
	return nil
}

// checkTail checks that a read reached the head it started from.
func checkTail(stream Stream, from, next uint64, head, last Version) error {
	switch {
	case next == from:
		return errors.Wrapf(ErrCompacted, "%s: events from #%d to #%d are not stored (archived?)", stream, from, head.Seq)
	case next-1 != head.Seq:
		return errors.Wrapf(ErrChainBroken, "%s: head is #%d but the last stored event is #%d", stream, head.Seq, next-1)
	case last.Hash != head.Hash:
		return errors.Wrapf(ErrChainBroken, "%s #%d: stored event's hash %s does not match the head's %s",
			stream, head.Seq, short(last.Hash), short(head.Hash))
	}
	return nil
}

// Watch implements Log. An empty Prefixes watches every stream. A stream missing from
// After counts as 0: the watch delivers it from #1 (reading what came before FromRev), so
// put every stream the caller already holds in After. While etcd cannot be reached the
// watch waits for it (clientv3 retries).
//
// One etcd watch per prefix, all on one gRPC stream and started at FromRev+1; their events
// are merged in revision order (an event is held until every watch has progressed past its
// revision, asking etcd for progress notifications while something is held), or, with
// PerStreamOrder, delivered as each watch's responses come. Events at or
// below the caller's After[stream] are skipped; a gap in a stream is filled by reading it.
// When etcd reports the watched revision compacted, the watch re-reads every stream under
// the prefixes from its last delivered sequence at the current revision and watches again
// from there. When etcd ends the watch saying "not now" (a member that lost its leader
// cancels its watches) the watch resumes the same way, after a short wait (100 ms,
// doubling to 2 s), for up to EtcdConfig.WatchResumeFor; only then does it end with
// ErrUnavailable.
func (l *EtcdLog) Watch(ctx context.Context, req WatchRequest) <-chan WatchBatch {
	return startWatch(ctx, l.base, &l.wg, req, l.watch)
}

// startWatch runs a log's watch loop in a goroutine tracked by wg, ended by ctx or by the
// log's base context (Close); a fatal error is delivered as the last batch.
func startWatch(ctx, base context.Context, wg *sync.WaitGroup, req WatchRequest,
	run func(ctx context.Context, w *watchState, fromRev int64) error) <-chan WatchBatch {
	out := make(chan WatchBatch)
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(base, cancel)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(out)
		defer cancel()
		defer stop()
		w := newWatchState(req, out)
		err := run(ctx, w, req.FromRev)
		if err != nil && ctx.Err() == nil {
			select {
			case out <- WatchBatch{Err: err}:
			case <-ctx.Done():
			}
		}
	}()
	return out
}

// errWatchCompacted signals that the watched revision was compacted away.
var errWatchCompacted = errors.New("watch revision compacted")

// DefaultWatchResumeFor bounds how long a watch keeps resuming after etcd said "not
// now" (a member that lost its leader cancels its watches; an unreachable cluster): past
// it, the watch ends with ErrUnavailable. A coild's session ends sooner anyway if its
// lease cannot be renewed.
const DefaultWatchResumeFor = 30 * time.Second

// watchResumeWait is the first wait before a watch resumes; it doubles up to 2 s.
const watchResumeWait = 100 * time.Millisecond

// watchRan: an etcd watch that lasted this long before it ended had been working (an
// idle watch gets no responses), so its end is a new interruption with a new bound.
const watchRan = 5 * time.Second

func (l *EtcdLog) watch(ctx context.Context, w *watchState, rev int64) error {
	var since time.Time // when etcd first said "not now" since the watch last ran
	wait := watchResumeWait
	w.progressed = false
	started := time.Now()
	err := l.watchFrom(ctx, w, rev)
	for {
		if w.progressed || time.Since(started) >= watchRan { // the watch ran before it ended: a new interruption
			since, wait = time.Time{}, watchResumeWait
		}
		switch {
		case errors.Is(err, errWatchCompacted):
			l.log.Info("watch: history compacted, re-reading streams", "fromRevision", rev)
		case errors.Is(err, ErrUnavailable) && ctx.Err() == nil && (since.IsZero() || time.Since(since) < l.resume):
			if since.IsZero() {
				since = time.Now()
				l.log.Warn("watch interrupted; resuming from the last event delivered", "err", err)
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			wait = min(2*wait, 2*time.Second)
		default:
			return err
		}
		w.progressed = false
		if rev, err = w.catchUp(ctx, l.Streams, l.Read); err != nil {
			continue // etcd still unavailable (resumed again, within the bound) or another error (returned)
		}
		started = time.Now()
		err = l.watchFrom(ctx, w, rev)
		if w.progressed && !since.IsZero() {
			l.log.Info("watch resumed", "interrupted for", time.Since(since).Round(time.Millisecond), "revision", rev)
		}
	}
}

type watchItem struct {
	i    int
	resp clientv3.WatchResponse
	end  bool
}

func (l *EtcdLog) watchFrom(ctx context.Context, w *watchState, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	merged := make(chan watchItem)
	for i, p := range w.prefixes {
		wch := l.cli.Watch(wctx, l.keys.LogPrefix()+p, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for resp := range wch {
				select {
				case merged <- watchItem{i: i, resp: resp}:
				case <-wctx.Done():
					return
				}
			}
			select {
			case merged <- watchItem{i: i, end: true}:
			case <-wctx.Done():
			}
		}()
	}

	progress := make([]int64, len(w.prefixes))
	for i := range progress {
		progress[i] = rev
	}
	var held []*clientv3.Event
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			_ = l.cli.RequestProgress(wctx)
			continue
		case it := <-merged:
			if it.end {
				if err := ctx.Err(); err != nil {
					return err
				}
				return errors.Mark(errors.Newf("events: watch of %s closed by the client (is etcd running? check --etcd-endpoints)",
					strings.Join(l.cli.Endpoints(), ",")), ErrUnavailable)
			}
			resp := it.resp
			if resp.CompactRevision != 0 {
				return errWatchCompacted
			}
			if resp.Err() == nil {
				w.progressed = true
			}
			if err := resp.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					return errWatchCompacted
				}
				if cerr := ctx.Err(); cerr != nil {
					return cerr
				}
				return errors.Mark(l.storeErr(ctx, err, "watch %q", w.prefixes[it.i]), ErrUnavailable)
			}
			switch {
			case len(resp.Events) > 0:
				held = append(held, resp.Events...)
				progress[it.i] = max(progress[it.i], resp.Events[len(resp.Events)-1].Kv.ModRevision)
			case resp.IsProgressNotify():
				progress[it.i] = max(progress[it.i], resp.Header.Revision)
			}
		}
		// What every watch has progressed past; with PerStreamOrder there is no other
		// prefix's events to wait for: what came is delivered at once (one etcd watch's
		// responses come in revision order).
		through := int64(math.MaxInt64)
		if !w.perStream {
			through = slices.Min(progress)
		}
		var ready []*clientv3.Event
		ready, held = releaseThrough(held, through)
		raws, err := l.toRaw(ready)
		if err != nil {
			return err
		}
		if err := l.checkDeletes(ctx, w, ready); err != nil {
			return err
		}
		if err := w.deliverRaw(ctx, raws, l.Read); err != nil {
			return err
		}
		if len(held) > 0 && ticker == nil {
			_ = l.cli.RequestProgress(wctx)
			ticker = time.NewTicker(50 * time.Millisecond)
			tick = ticker.C
		} else if len(held) == 0 && ticker != nil {
			ticker.Stop()
			ticker, tick = nil, nil
		}
	}
}

// releaseThrough splits held events into those at or below rev (sorted by revision) and
// the rest.
func releaseThrough(held []*clientv3.Event, rev int64) (ready, rest []*clientv3.Event) {
	for _, e := range held {
		if e.Kv.ModRevision <= rev {
			ready = append(ready, e)
		} else {
			rest = append(rest, e)
		}
	}
	sort.SliceStable(ready, func(a, b int) bool { return ready[a].Kv.ModRevision < ready[b].Kv.ModRevision })
	return ready, rest
}

// checkDeletes looks at the deletions among watched events. Archiving deletes a
// stream's events before its newest snapshot, never its head event; a deletion of the
// event the watch delivered last for a stream (or a later one) is something else: an
// import with --force deleting the log to write another, or someone deleting keys by
// hand. The head as of the deletion's revision tells: gone, or behind what the watch
// delivered, or at it with another hash, is ErrRewritten.
func (l *EtcdLog) checkDeletes(ctx context.Context, w *watchState, evs []*clientv3.Event) error {
	checked := map[Stream]bool{}
	for _, e := range evs {
		if e.Type != clientv3.EventTypeDelete {
			continue
		}
		s, seq, err := l.keys.ParseEvent(string(e.Kv.Key))
		if err != nil {
			return errors.Mark(err, ErrCorrupt)
		}
		have := w.after[s]
		if have == 0 || seq < have || checked[s] {
			continue
		}
		checked[s] = true
		resp, err := l.cli.Get(ctx, l.keys.Head(s), withRev(e.Kv.ModRevision))
		if err != nil {
			return l.storeErr(ctx, err, "head of %s after a deletion of #%d", s, seq)
		}
		head := Version{}
		if len(resp.Kvs) > 0 {
			if head, err = DecodeHead(resp.Kvs[0].Value); err != nil {
				return errors.Wrapf(ErrCorrupt, "%s: head: %v", s, err)
			}
		}
		h, known := w.heads[s]
		switch {
		case len(resp.Kvs) == 0:
			return errors.Wrapf(ErrRewritten, "%s: its events and head were deleted at revision %d (this watch had #%d): the log was replaced (log import --force?)",
				s, e.Kv.ModRevision, have)
		case head.Seq < have, head.Seq == have && known && head.Hash != h:
			return errors.Wrapf(ErrRewritten, "%s: head went back to #%d at revision %d (this watch had #%d)", s, head.Seq, e.Kv.ModRevision, have)
		}
	}
	return nil
}

// rawEvent is an event as stored, before decoding.
type rawEvent struct {
	stream Stream
	seq    uint64
	rev    int64
	value  []byte
}

// readFunc is Log.Read.
type readFunc func(ctx context.Context, stream Stream, from uint64, rev int64, fn func(*Event) error) (int64, error)

// toRaw keeps the puts of watched events (a delete is an archived event going away).
func (l *EtcdLog) toRaw(evs []*clientv3.Event) ([]rawEvent, error) {
	out := make([]rawEvent, 0, len(evs))
	for _, e := range evs {
		if e.Type != clientv3.EventTypePut {
			continue
		}
		s, seq, err := l.keys.ParseEvent(string(e.Kv.Key))
		if err != nil {
			return nil, errors.Mark(err, ErrCorrupt)
		}
		out = append(out, rawEvent{stream: s, seq: seq, rev: e.Kv.ModRevision, value: e.Kv.Value})
	}
	return out, nil
}

// deliverRaw decodes stored events (in revision order) and delivers them grouped by
// revision, skipping what the caller has and filling gaps with read.
func (w *watchState) deliverRaw(ctx context.Context, evs []rawEvent, read readFunc) error {
	for len(evs) > 0 {
		rev := evs[0].rev
		n := 1
		for n < len(evs) && evs[n].rev == rev {
			n++
		}
		batch := WatchBatch{Revision: rev}
		for _, e := range evs[:n] {
			if e.seq <= w.after[e.stream] {
				if _, delivered := w.heads[e.stream]; delivered {
					// This watch delivered the stream up to after[stream] itself, in
					// revision order: the event at e.seq was stored before, and an
					// append never writes an event key twice.
					return errors.Wrapf(ErrRewritten, "%s #%d was written again at revision %d (this watch had #%d): the log was replaced (log import --force?)",
						e.stream, e.seq, rev, w.after[e.stream])
				}
				continue
			}
			if e.seq > w.after[e.stream]+1 {
				// A gap: the caller's After was behind FromRev. Fill it by reading.
				if err := w.deliver(ctx, batch); err != nil {
					return err
				}
				batch = WatchBatch{Revision: rev}
				var gap []*Event
				if _, err := read(ctx, e.stream, w.after[e.stream]+1, rev, func(ev *Event) error {
					if ev.Seq <= e.seq {
						gap = append(gap, ev)
					}
					return nil
				}); err != nil {
					return err
				}
				if err := w.deliverRead(ctx, gap); err != nil {
					return err
				}
				continue
			}
			ev, err := Decode(e.stream, e.seq, e.value)
			if err != nil {
				return err
			}
			ev.Revision = rev
			if err := w.accept(ev); err != nil {
				return err
			}
			batch.Events = append(batch.Events, ev)
		}
		if err := w.deliver(ctx, batch); err != nil {
			return err
		}
		evs = evs[n:]
	}
	return nil
}

// watchState is what a watch knows of each stream: the last sequence delivered (or the
// caller's After) and, once it delivered one, that event's hash.
type watchState struct {
	prefixes []string
	// perStream: deliver each etcd watch's events as they come (WatchRequest.PerStreamOrder).
	perStream bool
	after     map[Stream]uint64
	heads     map[Stream]Hash
	out       chan<- WatchBatch
	// progressed: the current etcd watch delivered a response (events or progress)
	// before it ended; a watch ended without one does not reset the resume bound.
	progressed bool
}

func newWatchState(req WatchRequest, out chan<- WatchBatch) *watchState {
	w := &watchState{
		prefixes:  minimalPrefixes(req.Prefixes),
		perStream: req.PerStreamOrder,
		after:     make(map[Stream]uint64, len(req.After)),
		heads:     map[Stream]Hash{},
		out:       out,
	}
	for s, seq := range req.After {
		w.after[s] = seq
	}
	return w
}

// catchUp reads every watched stream past the last delivered sequence at the current
// revision, delivers it in revision order and returns that revision.
func (w *watchState) catchUp(ctx context.Context,
	streams func(context.Context, string, int64) (map[Stream]Version, int64, error), read readFunc) (int64, error) {
	var rev int64
	heads := map[Stream]Version{}
	for _, p := range w.prefixes {
		m, r, err := streams(ctx, p, rev)
		if err != nil {
			return 0, err
		}
		rev = r
		for s, v := range m {
			heads[s] = v
		}
	}
	var evs []*Event
	for s, v := range heads {
		if v.Seq <= w.after[s] {
			continue
		}
		if _, err := read(ctx, s, w.after[s]+1, rev, func(e *Event) error {
			evs = append(evs, e)
			return nil
		}); err != nil {
			return 0, err
		}
	}
	if err := w.deliverRead(ctx, evs); err != nil {
		return 0, err
	}
	return rev, nil
}

// minimalPrefixes drops duplicates and prefixes covered by a shorter one; none means all.
func minimalPrefixes(ps []string) []string {
	if len(ps) == 0 {
		return []string{""}
	}
	sorted := append([]string(nil), ps...)
	sort.Strings(sorted)
	var out []string
	for _, p := range sorted {
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func matchesAny(prefixes []string, s Stream) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(string(s), p) {
			return true
		}
	}
	return false
}

// accept checks that ev follows what the watch delivered of its stream and records it.
func (w *watchState) accept(ev *Event) error {
	if ev.Seq != w.after[ev.Stream]+1 {
		return errors.Wrapf(ErrChainBroken, "%s: watch got #%d after #%d", ev.Stream, ev.Seq, w.after[ev.Stream])
	}
	if h, ok := w.heads[ev.Stream]; ok && ev.Prev != h {
		return errors.Wrapf(ErrChainBroken, "%s #%d: previous-hash %s does not match #%d's hash %s",
			ev.Stream, ev.Seq, short(ev.Prev), ev.Seq-1, short(h))
	}
	if ev.Seq == 1 && !ev.Prev.IsZero() {
		return errors.Wrapf(ErrChainBroken, "%s #1: first event has a previous-hash", ev.Stream)
	}
	w.after[ev.Stream] = ev.Seq
	w.heads[ev.Stream] = ev.Hash
	return nil
}

// deliverRead delivers events read from the log (already decoded and chain-checked per
// stream) in revision order, grouped by revision, skipping what was delivered.
func (w *watchState) deliverRead(ctx context.Context, evs []*Event) error {
	sort.SliceStable(evs, func(a, b int) bool { return evs[a].Revision < evs[b].Revision })
	var batch WatchBatch
	for _, ev := range evs {
		if ev.Seq <= w.after[ev.Stream] {
			continue
		}
		if ev.Revision != batch.Revision {
			if err := w.deliver(ctx, batch); err != nil {
				return err
			}
			batch = WatchBatch{Revision: ev.Revision}
		}
		if err := w.accept(ev); err != nil {
			return err
		}
		batch.Events = append(batch.Events, ev)
	}
	return w.deliver(ctx, batch)
}

func (w *watchState) deliver(ctx context.Context, b WatchBatch) error {
	if len(b.Events) == 0 {
		return nil
	}
	select {
	case w.out <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
