package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// counters are the harness's tallies of what the simulated nodes asked etcd for.
type counters struct {
	appends       atomic.Int64 // every append (one etcd transaction each)
	conflicts     atomic.Int64 // appends that lost a race (ErrConflict)
	blockAttempts atomic.Int64 // appends carrying a BlockAssigned (a try to take a block)
	blocksTaken   atomic.Int64 // BlockAssigned events committed
	events        atomic.Int64 // events committed
	watchEvents   atomic.Int64 // events delivered by the nodes' watches
	reads         atomic.Int64 // stream reads (replay, catch-up)
	appendLat     latencies    // each successful append's etcd round trip (churn reports it)
}

// countingLog is an events.Log that counts the transactions of its appends. It forwards
// every call unchanged: the allocator under test runs as it does in coild.
type countingLog struct {
	events.Log
	c *counters
}

func (l *countingLog) Append(ctx context.Context, req events.AppendRequest) (events.Version, error) {
	blocks := countBlocks(req.Events) // BlockAssigned in the main stream (legacy: pool stream)
	for _, w := range appendParts(req) {
		blocks += countBlocks(w) // in a block stream, part of a node-stream append
	}
	l.c.appends.Add(1)
	if blocks > 0 {
		l.c.blockAttempts.Add(1)
	}
	start := time.Now()
	v, err := l.Log.Append(ctx, req)
	switch {
	case err == nil:
		l.c.appendLat.add(time.Since(start))
		n := int64(len(req.Events))
		for _, w := range appendParts(req) {
			n += int64(len(w))
		}
		l.c.events.Add(n)
		l.c.blocksTaken.Add(int64(blocks))
	case errors.Is(err, events.ErrConflict):
		l.c.conflicts.Add(1)
	}
	return v, err
}

func (l *countingLog) Read(ctx context.Context, stream events.Stream, from uint64, rev int64, fn func(*events.Event) error) (int64, error) {
	l.c.reads.Add(1)
	return l.Log.Read(ctx, stream, from, rev, fn)
}

// countBlocks counts the block assignments of a stream's part of an append (a node
// stream's record of its own block is a NodeBlockAdded, not counted).
func countBlocks(evs []*events.Event) int {
	n := 0
	for _, e := range evs {
		if _, ok := e.Payload.(*events.BlockAssigned); ok {
			n++
		}
	}
	return n
}
