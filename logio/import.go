package logio

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"os"
	"sync"

	"github.com/cockroachdb/errors"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
)

// DefaultWriters is how many transactions Import keeps in flight.
const DefaultWriters = 16

// maxTxnOps is etcd's default limit of operations per transaction.
const maxTxnOps = 128

// ImportOptions tune Import.
type ImportOptions struct {
	// Force imports into an etcd that holds a Coil log: the log's keys (events, heads,
	// snapshot pointers under the prefix) and the attachment index are deleted first.
	// Liveness keys are kept.
	Force bool
	// Writers is the number of transactions in flight (0: DefaultWriters).
	Writers int
	// VerifyProgress and Progress, if set, are told the events verified (first pass)
	// and written (second pass).
	VerifyProgress, Progress Progress
}

// Import loads an export file into the log's etcd under the log's prefix. It refuses
// (ErrNotEmpty) when etcd holds any event, head or snapshot pointer under the prefix,
// unless opt.Force (which deletes them once the file verified). It verifies the whole file first (ErrBroken, ErrFormat: nothing is
// written), keeping each event's stored bytes (the canonical encoding of the JSON event,
// whose hash the file carries) in a spool file in the temporary directory ($TMPDIR; about
// 300 bytes per event, removed on return); then it writes them in transactions of up to 127 puts, several in flight,
// and finally every stream's head and snapshot pointer (in transactions that check no
// head appeared meanwhile). The events get new etcd revisions (in import order); the
// file keeps the original ones.
//
// Import writes no attachment index (package logindex): entries left under the prefix
// (with Force, or in an otherwise empty etcd) are deleted before the events are written;
// coild and `coilctl log index` build the index again.
//
// A failure while writing leaves a partial log without heads; run Import again with
// Force. Archive files cannot be imported (their events are history, not state).
func Import(ctx context.Context, log *events.EtcdLog, path string, opt ImportOptions) (Header, error) {
	cli, keys := log.Client(), log.Keys()
	// Refuse early (before reading the file), but delete only once the file verified.
	if err := prepareEmpty(ctx, cli, keys, opt.Force, false); err != nil {
		return Header{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return Header{}, errors.Wrap(err, "logio: import")
	}
	defer f.Close()
	spool, err := os.CreateTemp("", "coil-import-*.spool")
	if err != nil {
		return Header{}, errors.Wrap(err, "logio: import: spool")
	}
	defer func() { _ = spool.Close(); _ = os.Remove(spool.Name()) }()
	sw := bufio.NewWriterSize(spool, 1<<20)
	var rec []byte
	ver := NewVerifier()
	ver.Progress = opt.VerifyProgress
	h, err := ver.file(ctx, f, func(h *Header) error {
		if h.Kind != KindExport {
			return errors.Wrapf(ErrFormat, "%s is an %s, not an export: import the export of the live log", path, h.Kind)
		}
		return nil
	}, func(e *events.Event, v []byte) error {
		rec = binary.AppendUvarint(rec[:0], uint64(len(e.Stream)))
		rec = append(rec, e.Stream...)
		rec = binary.AppendUvarint(rec, e.Seq)
		rec = binary.AppendUvarint(rec, uint64(len(v)))
		rec = append(rec, v...)
		_, werr := sw.Write(rec)
		return errors.Wrap(werr, "logio: import: spool")
	})
	if err != nil {
		return h, err
	}
	if err = sw.Flush(); err != nil {
		return h, errors.Wrap(err, "logio: import: spool")
	}
	if err = prepareEmpty(ctx, cli, keys, opt.Force, true); err != nil {
		return h, err
	}
	if _, err = spool.Seek(0, io.SeekStart); err != nil {
		return h, errors.Wrap(err, "logio: import: spool")
	}
	n, err := writeSpool(ctx, cli, keys, bufio.NewReaderSize(spool, 1<<20), h.Total(), opt)
	if err != nil {
		return h, err
	}
	if n != h.Total() {
		return h, errors.Newf("logio: import: spooled %d events, the file holds %d", n, h.Total())
	}
	if err := writeHeads(ctx, cli, keys, &h); err != nil {
		return h, err
	}
	opt.Progress.report(n, h.Total())
	return h, nil
}

// writeSpool puts the spooled events, several transactions in flight.
func writeSpool(ctx context.Context, cli *clientv3.Client, keys events.Keys, r *bufio.Reader, total int64, opt ImportOptions) (int64, error) {
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
	var done int64
	batch := make([]clientv3.Op, 0, events.MaxBatch)
	send := func() bool {
		select {
		case txns <- batch:
			batch = make([]clientv3.Op, 0, events.MaxBatch)
			return true
		case <-ctx.Done():
			return false
		}
	}
	var rerr error
	for {
		s, seq, v, err := readSpool(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rerr = err
			break
		}
		batch = append(batch, clientv3.OpPut(keys.Event(events.Stream(s), seq), v))
		done++
		if len(batch) == events.MaxBatch && !send() {
			break
		}
		if done%progressEvery == 0 {
			opt.Progress.report(done, total)
		}
	}
	if rerr == nil && len(batch) > 0 {
		send()
	}
	close(txns)
	wg.Wait()
	if writeErr != nil {
		return done, writeErr
	}
	if rerr != nil {
		return done, rerr
	}
	return done, ctx.Err()
}

func readSpool(r *bufio.Reader) (stream string, seq uint64, value string, err error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return "", 0, "", io.EOF
		}
		return "", 0, "", errors.Wrap(err, "logio: import: spool")
	}
	b := make([]byte, n)
	if _, err = io.ReadFull(r, b); err != nil {
		return "", 0, "", errors.Wrap(err, "logio: import: spool")
	}
	if seq, err = binary.ReadUvarint(r); err != nil {
		return "", 0, "", errors.Wrap(err, "logio: import: spool")
	}
	if n, err = binary.ReadUvarint(r); err != nil {
		return "", 0, "", errors.Wrap(err, "logio: import: spool")
	}
	v := make([]byte, n)
	if _, err := io.ReadFull(r, v); err != nil {
		return "", 0, "", errors.Wrap(err, "logio: import: spool")
	}
	return string(b), seq, string(v), nil
}

// prepareEmpty refuses a non-empty log unless force; with del it deletes it (with force)
// and the attachment index (always).
func prepareEmpty(ctx context.Context, cli *clientv3.Client, keys events.Keys, force, del bool) error {
	prefixes := []string{keys.LogPrefix(), keys.HeadPrefix(), keys.Prefix() + "snap/"}
	var n int64
	for _, p := range prefixes {
		r, err := cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return errors.Mark(errors.Wrap(err, "logio: import: is the log empty?"), events.ErrUnavailable)
		}
		n += r.Count
	}
	// The attachment index (logindex) is derived from the log: it neither makes etcd
	// "not empty" nor survives an import (it would describe another log).
	dropIndex := clientv3.OpDelete(keys.IndexPrefix(), clientv3.WithPrefix())
	if n == 0 {
		if !del {
			return nil
		}
		_, err := cli.Txn(ctx).Then(dropIndex).Commit()
		return errors.Wrap(err, "logio: import: delete the stale attachment index")
	}
	if !force {
		return errors.Wrapf(ErrNotEmpty, "%d keys under %s (log/, head/, snap/); import needs an empty etcd (or --force, which deletes them)", n, keys.Prefix())
	}
	if !del {
		return nil
	}
	ops := make([]clientv3.Op, 0, len(prefixes)+1)
	for _, p := range prefixes {
		ops = append(ops, clientv3.OpDelete(p, clientv3.WithPrefix()))
	}
	ops = append(ops, dropIndex)
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
