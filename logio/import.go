package logio

import (
	"context"
	"os"
	"sync"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
)

// DefaultWriters is how many transactions Import keeps in flight.
const DefaultWriters = 8

// maxTxnOps is etcd's default limit of operations per transaction.
const maxTxnOps = 128

// ImportOptions tune Import.
type ImportOptions struct {
	// Force imports into an etcd that holds a Coil log: the log's keys (events, heads,
	// snapshot pointers under the prefix) are deleted first. Liveness keys are kept.
	Force bool
	// Writers is the number of transactions in flight (0: DefaultWriters).
	Writers int
	// VerifyProgress and Progress, if set, are told the events verified (first pass)
	// and written (second pass).
	VerifyProgress, Progress Progress
}

// Import loads an export file into the log's etcd under the log's prefix. It refuses
// (ErrNotEmpty) when etcd holds any event, head or snapshot pointer under the prefix,
// unless opt.Force. It verifies the whole file first (ErrBroken, ErrFormat: nothing is
// written), then writes the events with their original bytes (the canonical encoding of
// each JSON event, whose hash the file carries) in transactions of up to 128 puts,
// several in flight, and finally every stream's head and snapshot pointer (in
// transactions that check no head appeared meanwhile). The events get new etcd
// revisions (in import order); the file keeps the original ones.
//
// A failure while writing leaves a partial log without heads; run Import again with
// Force. Archive files cannot be imported (their events are history, not state).
func Import(ctx context.Context, log *events.EtcdLog, path string, opt ImportOptions) (Header, error) {
	cli, keys := log.Client(), log.Keys()
	if err := prepareEmpty(ctx, cli, keys, opt.Force); err != nil {
		return Header{}, err
	}
	isExport := func(h *Header) error {
		if h.Kind != KindExport {
			return errors.Wrapf(ErrFormat, "%s is an %s, not an export: import the export of the live log", path, h.Kind)
		}
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return Header{}, errors.Wrap(err, "logio: import")
	}
	ver := NewVerifier()
	ver.Progress = opt.VerifyProgress
	h, err := ver.file(ctx, f, isExport, nil)
	_ = f.Close()
	if err != nil {
		return h, err
	}

	// Second pass: the file is read (and verified) again, so what is written is exactly
	// what was checked even if the file changed in between.
	f, err = os.Open(path)
	if err != nil {
		return h, errors.Wrap(err, "logio: import")
	}
	defer f.Close()
	writers := opt.Writers
	if writers <= 0 {
		writers = DefaultWriters
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	txns := make(chan []clientv3.Op, writers)
	var wg sync.WaitGroup
	var once sync.Once
	var writeErr error
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ops := range txns {
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					once.Do(func() { writeErr = errors.Wrap(err, "logio: import: write events"); cancel() })
				}
			}
		}()
	}
	total := h.Total()
	var done int64
	batch := make([]clientv3.Op, 0, maxTxnOps)
	ver2 := NewVerifier()
	h2, err := ver2.file(ctx, f, func(h2 *Header) error {
		if err := isExport(h2); err != nil {
			return err
		}
		if h2.Revision != h.Revision || h2.Total() != total {
			return errors.Wrap(ErrFormat, "the file changed while it was imported")
		}
		return nil
	}, func(e *events.Event) error {
		v, err := events.Encode(e)
		if err != nil {
			return errors.Wrapf(err, "logio: import %s #%d", e.Stream, e.Seq)
		}
		batch = append(batch, clientv3.OpPut(keys.Event(e.Stream, e.Seq), string(v)))
		if len(batch) == maxTxnOps-1 {
			select {
			case txns <- batch:
			case <-ctx.Done():
				return ctx.Err()
			}
			batch = make([]clientv3.Op, 0, maxTxnOps)
		}
		done++
		if done%progressEvery == 0 {
			opt.Progress.report(done, total)
		}
		return nil
	})
	if err == nil && len(batch) > 0 {
		select {
		case txns <- batch:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	close(txns)
	wg.Wait()
	if writeErr != nil {
		return h, writeErr
	}
	if err != nil {
		return h, err
	}
	if err := writeHeads(ctx, cli, keys, &h2); err != nil {
		return h, err
	}
	opt.Progress.report(done, total)
	return h, nil
}

// prepareEmpty refuses a non-empty log, or with force deletes it.
func prepareEmpty(ctx context.Context, cli *clientv3.Client, keys events.Keys, force bool) error {
	prefixes := []string{keys.LogPrefix(), keys.HeadPrefix(), keys.Prefix() + "snap/"}
	var n int64
	for _, p := range prefixes {
		r, err := cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return errors.Mark(errors.Wrap(err, "logio: import: is the log empty?"), events.ErrUnavailable)
		}
		n += r.Count
	}
	if n == 0 {
		return nil
	}
	if !force {
		return errors.Wrapf(ErrNotEmpty, "%d keys under %s (log/, head/, snap/); import needs an empty etcd (or --force, which deletes them)", n, keys.Prefix())
	}
	ops := make([]clientv3.Op, 0, len(prefixes))
	for _, p := range prefixes {
		ops = append(ops, clientv3.OpDelete(p, clientv3.WithPrefix()))
	}
	_, err := cli.Txn(ctx).Then(ops...).Commit()
	return errors.Wrap(err, "logio: import: delete the existing log")
}

// writeHeads writes every stream's head and snapshot pointer, checking that no head
// exists yet (a coild writing meanwhile would be overwritten).
func writeHeads(ctx context.Context, cli *clientv3.Client, keys events.Keys, h *Header) error {
	const perTxn = maxTxnOps / 2
	streams := h.SortedStreams()
	for len(streams) > 0 {
		n := min(perTxn, len(streams))
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, s := range streams[:n] {
			r := h.Streams[s]
			hk := keys.Head(s)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(hk), "=", 0))
			ops = append(ops, clientv3.OpPut(hk, string(events.EncodeHead(events.Version{Seq: r.Last, Hash: r.LastHash}))))
			if r.Snapshot >= r.First && r.Snapshot <= r.Last && r.Snapshot > 0 {
				ops = append(ops, clientv3.OpPut(keys.Snap(s), string(events.EncodeSnapSeq(r.Snapshot))))
			}
		}
		resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return errors.Wrap(err, "logio: import: write heads")
		}
		if !resp.Succeeded {
			return errors.Wrap(ErrNotEmpty, "a stream's head appeared during the import (is a coild running?)")
		}
		streams = streams[n:]
	}
	return nil
}
