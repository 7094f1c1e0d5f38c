package main

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// logCheck is what the whole log says once a scenario is over: read every stream at one
// revision, put the events in commit order (etcd revision) and replay block ownership
// and address holdings across all streams together.
type logCheck struct {
	Events        int            // events in the log
	Streams       int            // streams in the log
	Blocks        int            // blocks owned at the end
	Addresses     int            // addresses held at the end
	DupBlocks     int            // BlockAssigned of a block another node owned at the time
	DupAddresses  int            // AddressAssigned of an address another attachment held
	Foreign       int            // AddressAssigned in a block the node did not own at the time
	Assigned      int            // BlockAssigned events (blocks taken, over the log's life)
	BlocksPerNode map[string]int // blocks owned at the end
	FirstProblems []string
}

func (c *logCheck) duplicates() int { return c.DupBlocks + c.DupAddresses + c.Foreign }

func (c *logCheck) problem(format string, args ...any) {
	if len(c.FirstProblems) < 10 {
		c.FirstProblems = append(c.FirstProblems, fmt.Sprintf(format, args...))
	}
}

type blockKey struct {
	pool  string
	index uint64
}

// blockStreamPool returns the pool a block-ownership event belongs to, or "" for a stream
// that does not decide block ownership (cluster, node streams).
func blockStreamPool(s events.Stream) string {
	kind, name := s.Kind()
	switch kind {
	case "pool":
		return protoPoolName(name)
	case "block":
		for i := 0; i < len(name); i++ {
			if name[i] == '/' {
				return name[:i]
			}
		}
	}
	return ""
}

// checkLog reads the whole log and checks that no block and no address was ever held twice.
func checkLog(ctx context.Context, log events.Log) (*logCheck, error) {
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		return nil, errors.Wrap(err, "list streams")
	}
	var mu sync.Mutex
	var all []*events.Event
	work := make(chan events.Stream)
	errs := make(chan error, len(heads))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				var evs []*events.Event
				_, err := log.Read(ctx, s, 1, rev, func(e *events.Event) error { evs = append(evs, e); return nil })
				if err != nil {
					errs <- errors.Wrapf(err, "read %s", s)
					continue
				}
				mu.Lock()
				all = append(all, evs...)
				mu.Unlock()
			}
		}()
	}
	for s := range heads {
		work <- s
	}
	close(work)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	rank := func(e *events.Event) int {
		switch kind, _ := e.Stream.Kind(); kind {
		case "cluster":
			return 0
		case "pool", "block":
			return 1
		}
		return 2
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i], all[j]
		if a.Revision != b.Revision {
			return a.Revision < b.Revision
		}
		if rank(a) != rank(b) {
			return rank(a) < rank(b)
		}
		if a.Stream != b.Stream {
			return a.Stream < b.Stream
		}
		return a.Seq < b.Seq
	})
	c := &logCheck{Events: len(all), Streams: len(heads), BlocksPerNode: map[string]int{}}
	owner := map[blockKey]string{}
	holder := map[netip.Addr]string{}
	for _, e := range all {
		_, streamName := e.Stream.Kind()
		if pool := blockStreamPool(e.Stream); pool != "" {
			switch p := e.Payload.(type) {
			case *events.BlockAssigned:
				c.Assigned++
				k := blockKey{pool, p.Index}
				if o, ok := owner[k]; ok {
					c.DupBlocks++
					c.problem("%s #%d: block %d of %s assigned to %s while %s owns it", e.Stream, e.Seq, p.Index, pool, p.Node, o)
				}
				owner[k] = p.Node
			case *events.BlockReleased:
				delete(owner, blockKey{pool, p.Index})
			case *events.BlockReclaimed:
				delete(owner, blockKey{pool, p.Index})
			}
			continue
		}
		if kind, _ := e.Stream.Kind(); kind != "node" {
			continue
		}
		switch p := e.Payload.(type) {
		case *events.AddressAssigned:
			id := streamName + "/" + p.ContainerID + "/" + p.IfName
			if o := owner[blockKey{p.Pool, p.Block}]; o != streamName {
				c.Foreign++
				c.problem("%s #%d: address %v in block %d of %s, owned by %q", e.Stream, e.Seq, p.Addrs, p.Block, p.Pool, o)
			}
			for _, a := range p.Addrs {
				if h, ok := holder[a]; ok {
					c.DupAddresses++
					c.problem("%s #%d: address %s assigned to %s while %s holds it", e.Stream, e.Seq, a, id, h)
				}
				holder[a] = id
			}
		case *events.AddressReleased:
			for _, a := range p.Addrs {
				delete(holder, a)
			}
		}
	}
	c.Blocks, c.Addresses = len(owner), len(holder)
	for _, o := range owner {
		c.BlocksPerNode[o]++
	}
	return c, nil
}
