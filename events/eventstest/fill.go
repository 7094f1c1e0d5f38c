package eventstest

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
)

// FillStream is one stream Fill writes: N events made by Next (i counts from 0), after
// the stream's head Head (zero: an empty stream).
type FillStream struct {
	Stream events.Stream
	Head   events.Version
	N      int
	Next   func(i int) *events.Event
}

// Fill writes the events of streams into etcd under keys as fast as etcd takes them, for
// benchmark and test set-up: each stream's events are made in order and sealed as the
// log seals them (SealedPuts, batches of events.MaxBatch), the batches of all streams are
// put by inflight concurrent transactions without compares (in any order), then every
// stream's head. It returns the new heads in the order of streams. Nothing checks the
// heads: write only to streams nobody else writes meanwhile. Next is called from one
// goroutine per stream.
func Fill(ctx context.Context, cli *clientv3.Client, keys events.Keys, inflight int, streams ...FillStream) ([]events.Version, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var first error
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
		cancel()
	}
	jobs := make(chan []clientv3.Op, 2*max(1, inflight))
	var commits sync.WaitGroup
	for range max(1, inflight) {
		commits.Add(1)
		go func() {
			defer commits.Done()
			for ops := range jobs {
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					fail(err)
				}
			}
		}()
	}
	heads := make([]events.Version, len(streams))
	var makers sync.WaitGroup
	for k, fs := range streams {
		makers.Add(1)
		go func() {
			defer makers.Done()
			head := fs.Head
			for done := 0; done < fs.N && ctx.Err() == nil; {
				evs := make([]*events.Event, min(events.MaxBatch, fs.N-done))
				for i := range evs {
					evs[i] = fs.Next(done + i)
				}
				ops, h, err := SealedPuts(keys, events.AppendRequest{Stream: fs.Stream, Expected: head, Events: evs})
				if err != nil {
					fail(err)
					return
				}
				select {
				case jobs <- ops:
				case <-ctx.Done():
					return
				}
				head = h
				done += len(evs)
			}
			heads[k] = head
		}()
	}
	makers.Wait()
	close(jobs)
	commits.Wait()
	if first != nil {
		return nil, first
	}
	for lo := 0; lo < len(streams); lo += events.MaxBatch {
		var ops []clientv3.Op
		for k := lo; k < min(len(streams), lo+events.MaxBatch); k++ {
			ops = append(ops, PutHead(keys, streams[k].Stream, heads[k]))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			return nil, err
		}
	}
	return heads, ctx.Err()
}
