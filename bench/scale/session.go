package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
)

// session is what a simulated node holds in etcd, as coild does: a client and the log
// on it, a lease kept alive with the liveness key on it, the node's goroutines (run on
// rctx until stop) and the first error its watch met.
type session struct {
	name    string
	cli     *clientv3.Client
	log     *events.EtcdLog
	lease   clientv3.LeaseID
	alive   string
	ttl     time.Duration
	rctx    context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	watched atomic.Int64
	err     atomic.Value // first watch error
}

// keepAlive keeps lease id alive until stop.
func (s *session) keepAlive(id clientv3.LeaseID) error {
	ka, err := s.cli.KeepAlive(s.rctx, id)
	if err != nil {
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for range ka {
		}
	}()
	return nil
}

// watch hands every event of w to observe (counting it) until w ends; the first error,
// the watch's or observe's, ends it and is kept for watchErr.
func (s *session) watch(w <-chan events.WatchBatch, c *counters, observe func(*events.Event) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for b := range w {
			if b.Err != nil {
				s.err.CompareAndSwap(nil, b.Err)
				return
			}
			for _, e := range b.Events {
				s.watched.Add(1)
				c.watchEvents.Add(1)
				if err := observe(e); err != nil {
					s.err.CompareAndSwap(nil, err)
					return
				}
			}
		}
	}()
}

// watchErr is the first error the node's watch loop met, if any.
func (s *session) watchErr() error {
	if e, ok := s.err.Load().(error); ok {
		return e
	}
	return nil
}

// stop ends the node's goroutines, revokes its lease and closes its client.
// The client is closed before waiting for the goroutines: a watch whose connection is
// being re-established does not end on its context alone.
func (s *session) stop() {
	if s.cancel != nil {
		s.cancel()
	}
	if s.lease != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = s.cli.Revoke(ctx, s.lease)
		cancel()
	}
	_ = s.cli.Close()
	s.wg.Wait()
	if s.log != nil {
		_ = s.log.Close()
	}
}
