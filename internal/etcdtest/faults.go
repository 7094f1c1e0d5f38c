package etcdtest

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TxnFault is what one transaction of a faulty client does instead of answering: it
// fails with Err, after committing for real when Commit is set (an unknown outcome, as
// when a member times out a proposal the cluster then applies).
type TxnFault struct {
	Commit bool
	Err    error
}

// InjectTxnFaults makes cli's transactions consult fault first: fault(i) is called with
// the transaction's number (1, 2, ...) and returns nil to let it run normally. It is
// failure injection at the client's edge: everything else is the real etcd. Errors
// should be the ones the etcd client returns (e.g. rpctypes.ErrTimeoutDueToLeaderFail).
// It returns a function that counts the transactions seen so far.
func InjectTxnFaults(cli *clientv3.Client, fault func(i int) *TxnFault) (count func() int) {
	f := &faultKV{KV: cli.KV, fault: fault}
	cli.KV = f
	return func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.n
	}
}

type faultKV struct {
	clientv3.KV
	fault func(i int) *TxnFault
	mu    sync.Mutex
	n     int
}

func (f *faultKV) Txn(ctx context.Context) clientv3.Txn {
	return &faultTxn{Txn: f.KV.Txn(ctx), kv: f}
}

type faultTxn struct {
	clientv3.Txn
	kv *faultKV
}

func (t *faultTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *faultTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *faultTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *faultTxn) Commit() (*clientv3.TxnResponse, error) {
	t.kv.mu.Lock()
	t.kv.n++
	i := t.kv.n
	t.kv.mu.Unlock()
	f := t.kv.fault(i)
	if f == nil {
		return t.Txn.Commit()
	}
	if f.Commit {
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
	}
	return nil, f.Err
}
