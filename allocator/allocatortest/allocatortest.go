// Package allocatortest runs node allocators the way coild does (fenced on a real etcd
// lease: liveness key, Load, Register, Run) for tests and benchmarks of the packages that
// build on the allocator.
package allocatortest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
)

// Options tune Start. The zero value is fine.
type Options struct {
	Prefix   string       // etcd key prefix ("" = events.DefaultPrefix)
	Clock    events.Clock // nil = the system clock
	MaxBatch int          // group-commit bound (0 = events.MaxBatch)
	TTL      int64        // lease TTL in seconds (0 = 60); the lease is kept alive
	// AliveValue is the liveness key's value; empty: this build's (events.AliveValue at
	// events.CurrentLevel). A bare node name plays a coild from before feature levels.
	AliveValue string
	// AppendTimeout bounds each append (0 = allocator.DefaultAppendTimeout).
	AppendTimeout time.Duration
}

// Node is a running node allocator fenced on its own lease.
type Node struct {
	*allocator.Node
	Lease clientv3.LeaseID

	tb     testing.TB
	cli    *clientv3.Client
	once   sync.Once
	killed sync.Once
	stop   func()
}

// Start creates the node's liveness key on a new lease (kept alive), loads, registers and
// runs the allocator. It stops when the test ends.
func Start(tb testing.TB, cli *clientv3.Client, log events.Log, name string, opt Options) *Node {
	tb.Helper()
	ctx := context.Background()
	ttl := opt.TTL
	if ttl == 0 {
		ttl = 60
	}
	g, err := cli.Grant(ctx, ttl)
	if err != nil {
		tb.Fatal(err)
	}
	key := events.AliveKey(opt.Prefix, name)
	value := opt.AliveValue
	if value == "" {
		value = events.AliveValue(events.AliveInfo{Node: name, Level: events.CurrentLevel})
	}
	if _, err = cli.Put(ctx, key, value, clientv3.WithLease(g.ID)); err != nil {
		tb.Fatal(err)
	}
	kctx, kcancel := context.WithCancel(context.Background())
	ka, err := cli.KeepAlive(kctx, g.ID)
	if err != nil {
		kcancel()
		tb.Fatal(err)
	}
	go func() {
		for range ka {
		}
	}()
	tb.Cleanup(kcancel) // after the allocator's stop (cleanups run last first)
	n := allocator.NewNode(allocator.NodeConfig{Node: name, Log: log, Clock: opt.Clock, AliveKey: key, Lease: int64(g.ID), MaxBatch: opt.MaxBatch, AppendTimeout: opt.AppendTimeout})
	stop := Run(tb, n)
	out := &Node{Node: n, Lease: g.ID, tb: tb, cli: cli}
	out.stop = func() { stop(); kcancel() }
	tb.Cleanup(out.Stop)
	return out
}

// Run loads, registers and runs n as coild's session does, for whatever fencing n's
// config names (Start's lease, or a MemLog's lease key). It returns the stop (the
// allocator's Run ended and waited for; idempotent), which also runs when the test ends.
func Run(tb testing.TB, n *allocator.Node) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if _, _, err := n.Load(ctx); err != nil {
		cancel()
		tb.Fatalf("load: %+v", err)
	}
	if err := n.Register(ctx); err != nil {
		cancel()
		tb.Fatalf("register: %+v", err)
	}
	done := make(chan struct{})
	go func() { n.Run(ctx); close(done) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	tb.Cleanup(stop)
	return stop
}

// Stop stops the allocator and the lease's keep-alive (the lease then expires by its TTL).
// Idempotent.
func (n *Node) Stop() { n.once.Do(n.stop) }

// Kill stops the node and revokes its lease at once, as if its lease had expired.
// Idempotent.
func (n *Node) Kill() {
	n.tb.Helper()
	n.Stop()
	n.killed.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := n.cli.Revoke(ctx, n.Lease); err != nil {
			n.tb.Errorf("revoke lease %x: %v", n.Lease, err)
		}
	})
}

// SavedLog is a copy of the log's keys (events, heads, snapshot pointers) at one moment.
type SavedLog struct {
	prefix string
	kvs    map[string]string
}

// SaveLog copies every event, head and snapshot-pointer key under prefix.
func SaveLog(tb testing.TB, cli *clientv3.Client, prefix string) *SavedLog {
	tb.Helper()
	keys := events.NewKeys(prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := &SavedLog{prefix: prefix, kvs: map[string]string{}}
	for _, p := range logPrefixes(keys) {
		resp, err := cli.Get(ctx, p, clientv3.WithPrefix())
		if err != nil {
			tb.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			s.kvs[string(kv.Key)] = string(kv.Value)
		}
	}
	return s
}

// RewriteLog replaces the log under the saved prefix with the saved copy the way
// `coilctl log import --force` does: one transaction deletes every event, head and
// snapshot pointer, then the saved keys are written (liveness keys are kept). A running
// allocator's streams are thereby rewritten under it.
func (s *SavedLog) RewriteLog(tb testing.TB, cli *clientv3.Client) {
	tb.Helper()
	keys := events.NewKeys(s.prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var dels []clientv3.Op
	for _, p := range logPrefixes(keys) {
		dels = append(dels, clientv3.OpDelete(p, clientv3.WithPrefix()))
	}
	if _, err := cli.Txn(ctx).Then(dels...).Commit(); err != nil {
		tb.Fatal(err)
	}
	var puts []clientv3.Op
	flush := func() {
		if len(puts) == 0 {
			return
		}
		if _, err := cli.Txn(ctx).Then(puts...).Commit(); err != nil {
			tb.Fatal(err)
		}
		puts = puts[:0]
	}
	// Events first, then heads and snapshot pointers, as an import writes them.
	for _, eventKeys := range []bool{true, false} {
		for k, v := range s.kvs {
			if strings.HasPrefix(k, keys.LogPrefix()) != eventKeys {
				continue
			}
			puts = append(puts, clientv3.OpPut(k, v))
			if len(puts) == 100 {
				flush()
			}
		}
		flush()
	}
}

func logPrefixes(k events.Keys) []string {
	return []string{k.LogPrefix(), k.HeadPrefix(), k.Prefix() + "snap/"}
}
