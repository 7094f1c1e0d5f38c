package readside

import (
	"context"
	"sort"
	"strings"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
)

// EventFilter decides which events to show (coilctl events). Its fields combine: an event
// is shown when every field that is set holds. It is stateful (PodName pairs a release
// with the pod's assignment), so Show must see every event of the streams Reads accepts,
// in order, from one goroutine.
type EventFilter struct {
	// Stream: only this stream ("cluster", "pool/NAME", "node/NAME"), or the streams under
	// a prefix ending in "/" ("pool/", "node/").
	Stream string
	// Types: only these event types.
	Types []events.Type
	// Node: only node Node's stream and the block events about Node in pool streams.
	Node string
	// Pool: only pool Pool's stream, the address events in Pool and Pool's definition in
	// the cluster stream.
	Pool string
	// Container: only address events of containers whose ID starts with this (lower case),
	// and their fixed-address claims (AddressClaimed, AddressClaimReleased in pool streams).
	Container string
	// PodNamespace and PodName (both or neither): only the address events of this pod (its
	// assignments and their releases, its claims and their ends).
	PodNamespace, PodName string
	// Since and Until: only events at or after, at or before these points.
	Since, Until *Point

	types map[events.Type]bool
	// podKeys are the node streams' attachments assigned to the pod, until released.
	podKeys map[[3]string]bool
}

func (f *EventFilter) keepStream(s events.Stream) bool {
	switch {
	case f.Stream == "":
		return true
	case strings.HasSuffix(f.Stream, "/"):
		return strings.HasPrefix(string(s), f.Stream)
	}
	return string(s) == f.Stream
}

// Reads tells whether a stream can hold events the filter shows.
func (f *EventFilter) Reads(s events.Stream) bool {
	if !f.keepStream(s) {
		return false
	}
	kind, name := s.Kind()
	pool, _, isBlock := s.Block()
	if isBlock {
		kind, name = "pool", pool // a block stream belongs to its pool
	}
	switch {
	case f.Node != "" && kind != "pool" && (kind != "node" || name != f.Node):
		return false
	case f.Pool != "" && kind == "node":
	case f.Pool != "" && kind != "cluster" && name != f.Pool:
		return false
	case (f.Container != "" || f.PodName != "") && kind != "node" && (kind != "pool" || isBlock):
		return false // address events are in node streams, fixed-address claims in pool streams
	}
	return true
}

// Show decides one event; call it for every event read, in revision order.
func (f *EventFilter) Show(e *events.Event) bool {
	if f.types == nil && len(f.Types) > 0 {
		f.types = map[events.Type]bool{}
		for _, t := range f.Types {
			f.types[t] = true
		}
	}
	if f.podKeys == nil && f.PodName != "" {
		f.podKeys = map[[3]string]bool{}
	}
	if !f.Reads(e.Stream) {
		return false
	}
	_, streamName := e.Stream.Kind()
	if bpool, _, ok := e.Stream.Block(); ok {
		streamName = bpool
	}
	var container, ifName, pool, node string
	switch p := e.Payload.(type) {
	case *events.PoolCreated:
		pool = p.Name
	case *events.PoolSplit:
		pool = p.Name
	case *events.NodeBlockAdded:
		pool = p.Pool
	case *events.NodeBlockRemoved:
		pool = p.Pool
	case *events.PoolSubnetAdded:
		pool = p.Name
	case *events.PoolDeleted:
		pool = p.Name
	case *events.AddressesReserved:
		pool = p.Pool
	case *events.AddressesUnreserved:
		pool = p.Pool
	case *events.PoolNetworkBroadcastSet:
		pool = p.Pool
	case *events.PoolNodeSelectorSet:
		pool = p.Name
	case *events.PoolDisabled:
		pool = p.Name
	case *events.PoolEnabled:
		pool = p.Name
	case *events.BlockAssigned:
		node = p.Node
	case *events.BlockReleased:
		node = p.Node
	case *events.BlockReclaimed:
		node = p.Node
	case *events.AddressClaimed:
		container, ifName, node = p.ContainerID, p.IfName, p.Node
	case *events.AddressClaimReleased:
		container, ifName, node = p.ContainerID, p.IfName, p.Node
	case *events.AddressAssigned:
		container, ifName, pool = p.ContainerID, p.IfName, p.Pool
	case *events.AddressReleased:
		container, ifName, pool = p.ContainerID, p.IfName, p.Pool
	}
	if f.podKeys != nil {
		k := [3]string{string(e.Stream), container, ifName}
		switch p := e.Payload.(type) {
		case *events.AddressAssigned:
			if p.PodNamespace != f.PodNamespace || p.PodName != f.PodName {
				return false
			}
			f.podKeys[k] = true
		case *events.AddressClaimed:
			if p.PodNamespace != f.PodNamespace || p.PodName != f.PodName {
				return false
			}
			f.podKeys[k] = true
		case *events.AddressReleased, *events.AddressClaimReleased:
			if !f.podKeys[k] {
				return false
			}
			delete(f.podKeys, k)
		default:
			return false
		}
	}
	kind, _ := e.Stream.Kind()
	if kind == "block" {
		kind = "pool"
	}
	switch {
	case f.types != nil && !f.types[e.Type()]:
		return false
	case f.Node != "" && kind == "pool" && node != f.Node:
		return false
	case f.Pool != "" && kind != "pool" && pool != f.Pool:
		return false
	case f.Pool != "" && kind == "pool" && streamName != f.Pool:
		return false
	case f.Container != "" && (container == "" || !strings.HasPrefix(container, f.Container)):
		return false
	case f.Since != nil && !f.Since.NotBefore(e):
		return false
	case f.Until != nil && !f.Until.Includes(e):
		return false
	}
	return true
}

// indexQuery is the attachment-index query of the filter (the pod's if PodName is set,
// else the container prefix's) and its key, and false when the index cannot narrow the
// filter (neither is set, or the prefix is shorter than 12 characters).
func (f *EventFilter) indexQuery() (*Query, string, bool) {
	var q Query
	switch {
	case f.PodName != "":
		q.PodNamespace, q.PodName = f.PodNamespace, f.PodName
	case f.Container != "":
		q.Container = f.Container
	default:
		return nil, "", false
	}
	key, ok := q.indexKey()
	return &q, key, ok
}

// ReadEvents reads, at rev, the streams of heads that f reads and the cluster stream
// (always: callers that describe events need the pools' geometry), Workers streams at
// once, and returns their events in revision order; pass each to f.Show. With ix set and
// a filter the index can narrow (PodName, or a Container prefix of 12 characters or
// more), each node stream reads only the chunks that may mention the pod or container
// (or the container of an assignment of the pod still open: its release), every
// unindexed range and the tail; the events skipped are ones f.Show rejects and whose
// absence does not change its state, so what it shows is what the full read shows, and
// a caller may go on watching from heads.
func ReadEvents(ctx context.Context, log events.Log, ix *Index, f *EventFilter,
	heads map[events.Stream]events.Version, rev int64) ([]*events.Event, error) {
	streams := StreamsOf(heads, func(s events.Stream) bool { return s == events.ClusterStream || f.Reads(s) })
	q, key, indexed := f.indexQuery()
	var entries map[events.Stream][]*logindex.Entry
	if indexed && ix != nil && len(streams) > 0 {
		var err error
		if entries, err = ix.load(ctx, rev); err != nil {
			return nil, err
		}
	}
	per := make([][]*events.Event, len(streams))
	err := Parallel(ctx, 0, len(streams), func(ctx context.Context, i int) error {
		s := streams[i]
		collect := func(e *events.Event) error { per[i] = append(per[i], e); return nil }
		r := chunkRead{visit: collect, full: func(ctx context.Context) error { return readStream(ctx, log, s, rev, collect) }}
		if len(entries[s]) > 0 {
			p := newPairing(q, s)
			r.want = p.wants(key)
			r.visit = func(e *events.Event) error { per[i] = append(per[i], e); return p.visit(e) }
		}
		return ix.read(ctx, log, s, heads[s], rev, entries[s], nil, r)
	})
	if err != nil {
		return nil, err
	}
	var evs []*events.Event
	for _, p := range per {
		evs = append(evs, p...)
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Revision < evs[j].Revision })
	return evs, nil
}

// readStream reads stream s from its first event as of revision rev, feeding fn its
// events in sequence order; fn may return errStopStream to skip the rest of the stream.
func readStream(ctx context.Context, log events.Log, s events.Stream, rev int64, fn func(*events.Event) error) error {
	_, err := log.Read(ctx, s, 1, rev, fn)
	if err != nil && !errors.Is(err, errStopStream) {
		return errors.Wrapf(err, "read %s at revision %d", s, rev)
	}
	return nil
}
