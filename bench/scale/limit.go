package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
)

// limit: every node allocates as fast as its requesters can for limitDur (group commit
// batches whatever queued up while the previous append was in flight); then etcd's own
// rate for the same shape of work: one writer per node, each a transaction that compares
// a head value and the writer's lease, puts the mean batch of values of the mean stored
// size and the new head (what an append of a group commit is), for as long.
func (h *harness) limit(ctx context.Context) error {
	o := h.o
	var allocs atomic.Int64
	var fails failures
	var lat latencies
	lctx, cancel := context.WithTimeout(ctx, o.limitDur)
	defer cancel()
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	etcd0, self0 := h.etcd.cpuSeconds(), procCPU(os.Getpid())
	t0 := time.Now()
	// The window is limitDur from t0 on the clock, not lctx.Err(): a request answered
	// "not decided within its deadline" as the deadline passes comes back before the
	// context's timer has fired, and a requester that looped on lctx.Err() then spun
	// through thousands of instant failures (each an error with a stack) while the
	// window's end was still being noticed, stretching it by a second and more.
	end := t0.Add(o.limitDur)
	for i, n := range h.nodes {
		for r := range o.limitReqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; time.Now().Before(end); k++ {
					s := time.Now()
					_, err := n.allocate(lctx, allocator.Request{ContainerID: containerID(i, r<<32|k), IfName: "eth0", Pool: h.pool})
					done := time.Now()
					switch {
					case done.After(end): // answered after the window: not counted either way
					case err != nil:
						fails.add(err)
					default:
						lat.add(done.Sub(s))
						allocs.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	cpuEl := time.Since(t0).Seconds()
	el := o.limitDur.Seconds()
	stopProfile()
	h.res.LimitCoilEtcdCPU, h.res.LimitCoilClientCPU = (h.etcd.cpuSeconds()-etcd0)/cpuEl, (procCPU(os.Getpid())-self0)/cpuEl
	h.res.CoilAllocsPerS = float64(allocs.Load()) / el
	h.res.P50ms, h.res.P99ms, h.res.Maxms = lat.quantiles()
	h.res.Allocs = int(allocs.Load())
	h.res.FailedAllocs, h.res.FailedReasons = fails.n, fails.by
	if a := h.c.appends.Load(); a > 0 {
		h.res.MeanBatch = float64(h.c.events.Load()) / float64(a)
	}
	// Mean stored size of the node streams' events.
	resp, err := h.admin.Get(ctx, events.NewKeys("").LogPrefix()+"node/", clientv3.WithPrefix(), clientv3.WithLimit(2000))
	if err == nil && len(resp.Kvs) > 0 {
		var sum int
		for _, kv := range resp.Kvs {
			sum += len(kv.Value)
		}
		h.res.MeanValueBytes = float64(sum) / float64(len(resp.Kvs))
	}
	fmt.Fprintf(os.Stderr, "limit: coil %.0f allocations/s, mean batch %.1f, value %.0f B\n", h.res.CoilAllocsPerS, h.res.MeanBatch, h.res.MeanValueBytes)
	if o.noRawEtcd || h.res.MeanBatch == 0 {
		return nil
	}
	rate, err := h.rawPuts(ctx, max(1, int(h.res.MeanBatch+0.5)), int(h.res.MeanValueBytes+0.5), o.limitDur, false)
	if err != nil {
		return err
	}
	h.res.EtcdPutsPerS = rate
	if o.limitRawWatch {
		// The same again with each writer watching its own keys, as every node watches
		// its own stream (and so gets its own events back): what the watches cost etcd.
		w, err := h.rawPuts(ctx, max(1, int(h.res.MeanBatch+0.5)), int(h.res.MeanValueBytes+0.5), o.limitDur, true)
		if err != nil {
			return err
		}
		h.res.EtcdPutsWatchedPerS = w
	}
	if rate > 0 {
		h.res.LimitFraction = h.res.CoilAllocsPerS / rate
	}
	return nil
}

// rawPuts runs one writer per node, each appending batches of size values of valueBytes
// to its own key range with the transaction shape of an append, and returns values/s.
// With watch, each writer also watches its own key range (and drains it).
func (h *harness) rawPuts(ctx context.Context, batch, valueBytes int, d time.Duration, watch bool) (float64, error) {
	val := make([]byte, valueBytes)
	_, _ = rand.Read(val)
	head := make([]byte, 34)
	_, _ = rand.Read(head)
	var puts atomic.Int64
	var firstErr atomic.Value
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	etcd0, self0 := h.etcd.cpuSeconds(), procCPU(os.Getpid())
	t0 := time.Now()
	end := t0.Add(d) // the same window as Coil's side: puts committed before it count
	for i, n := range h.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			alive := events.NewKeys("").Alive(n.name)
			tag := "raw"
			if watch {
				tag = "raw-watched"
			}
			hk := fmt.Sprintf("/%s/head/%d", tag, i)
			logKey := fmt.Sprintf("/%s/log/%d/", tag, i)
			if watch {
				wch := n.cli.Watch(rctx, logKey, clientv3.WithPrefix())
				go func() {
					for range wch { //nolint:revive // drained: etcd sends every put as a node's watch gets its own events
					}
				}()
			}
			prev := ""
			for seq := 1; rctx.Err() == nil; {
				ops := make([]clientv3.Op, 0, batch+1)
				for range batch {
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s%012d", logKey, seq), string(val)))
					seq++
				}
				next := fmt.Sprintf("%012d", seq) + string(head[12:])
				resp, err := rawAppend(rctx, n.cli, alive, n.lease, hk, prev, next, ops)
				if err != nil {
					if rctx.Err() == nil {
						firstErr.CompareAndSwap(nil, err)
					}
					return
				}
				if !resp.Succeeded {
					firstErr.CompareAndSwap(nil, fmt.Errorf("raw writer %d: compare failed", i))
					return
				}
				prev = next
				if time.Now().Before(end) {
					puts.Add(int64(batch))
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	cpuEl := time.Since(t0).Seconds()
	if !watch {
		h.res.LimitRawEtcdCPU, h.res.LimitRawClientCPU = (h.etcd.cpuSeconds()-etcd0)/cpuEl, (procCPU(os.Getpid())-self0)/cpuEl
	}
	rate := float64(puts.Load()) / d.Seconds()
	fmt.Fprintf(os.Stderr, "limit: etcd %.0f puts/s (batches of %d, %d B values, %d writers, watched %v)\n", rate, batch, valueBytes, len(h.nodes), watch)
	return rate, nil
}

// startCPUProfile writes a CPU profile of this process to path (none when path is
// empty) until the returned function is called.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}

// rawAppend is etcd's own transaction of an append's shape: compare the writer's lease
// (on its liveness key alive) and the head hk (prev; "" for none yet), then run ops and
// put next as the new head.
func rawAppend(ctx context.Context, cli *clientv3.Client, alive string, lease clientv3.LeaseID, hk, prev, next string,
	ops []clientv3.Op) (*clientv3.TxnResponse, error) {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(alive), "=", lease)}
	if prev == "" {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(hk), "=", 0))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.Value(hk), "=", prev))
	}
	return cli.Txn(ctx).If(cmps...).Then(append(ops, clientv3.OpPut(hk, next))...).Commit()
}
