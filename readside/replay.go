package readside

import (
	"context"
	"maps"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// ReplayWorkers is how many streams Replay reads at once: reading one stream while
// decoding another keeps both the store and the decoder busy.
const ReplayWorkers = 4

// Replay folds the given streams, each from sequence from(stream) (nil: 1; use
// events.StartSeq to start at the newest snapshot), all at store revision rev (0: each
// at the latest), into a new state. Streams are read concurrently (ReplayWorkers at
// once), each into its own stream state; the first error stops the rest and is returned
// wrapped with the stream's name. A stream read from a sequence after #1 must start
// with a snapshot there (else the events before it are needed: events.ErrCompacted).
func Replay(ctx context.Context, log events.Log, streams []events.Stream, rev int64, from func(context.Context, events.Stream) (uint64, error)) (*projection.State, error) {
	defer relaxGC()()
	res, err := foldAll(ctx, ReplayWorkers, streams, func(ctx context.Context, s events.Stream) (*streamFold, error) {
		start := uint64(1)
		if from != nil {
			var err error
			if start, err = from(ctx, s); err != nil {
				return nil, errors.Wrapf(err, "replay %s", s)
			}
		}
		f, err := foldStream(ctx, log, s, start, rev, nil)
		if err != nil {
			return nil, errors.Wrapf(err, "replay %s", s)
		}
		return f, nil
	})
	if err != nil {
		return nil, err
	}
	return res.state, nil
}

// State is the projected state of every stream of the log at one revision.
type State struct {
	*projection.State
	// Rev is the store revision the state reflects.
	Rev int64
}

// Load replays every stream of the log at one revision (the latest), each from its
// newest snapshot (events.StartSeq): the current state, as coilctl's listings show it.
func Load(ctx context.Context, log events.Log) (*State, error) {
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		return nil, errors.Wrap(err, "list streams")
	}
	st, err := Replay(ctx, log, StreamsOf(heads, nil), rev, func(ctx context.Context, s events.Stream) (uint64, error) {
		return events.StartSeq(ctx, log, s, rev)
	})
	if err != nil {
		return nil, err
	}
	return &State{State: st, Rev: rev}, nil
}

// AddressesInUse counts, per block of pool, the addresses nodes hold in it.
func (s *State) AddressesInUse(pool string) map[uint64]int {
	out := map[uint64]int{}
	for _, n := range s.Nodes {
		for ref, u := range n.Use {
			if ref.Pool == pool && u.InUse > 0 {
				out[ref.Index] += u.InUse
			}
		}
	}
	return out
}

// NodeNames lists, sorted, every node the state knows: with a node stream or owning a
// block.
func (s *State) NodeNames() []string {
	set := map[string]bool{}
	for n := range s.Nodes {
		set[n] = true
	}
	for _, owners := range s.AllOwners() {
		for _, o := range owners {
			set[o.Node] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// KnowsNode reports whether the state knows node name (NodeNames).
func (s *State) KnowsNode(name string) bool {
	if _, ok := s.Nodes[name]; ok {
		return true
	}
	for _, owners := range s.AllOwners() {
		for _, o := range owners {
			if o.Node == name {
				return true
			}
		}
	}
	return false
}

// ReplayGCPercent is the garbage collector's target while a replay runs. A replay
// allocates a lot of short-lived garbage (decoded events, store responses) over a small
// live heap, so the default target (100) collects very often; a higher target for the
// few seconds of a replay cuts its time by a quarter or more on this 2-core machine
// (docs/benchmarks.md) at the cost of a temporarily larger heap.
const ReplayGCPercent = 400

var gcMu sync.Mutex
var gcDepth, gcSaved int

// relaxGC raises the GC target for the duration of a replay; concurrent replays share it
// and the last one out restores the previous setting.
func relaxGC() (restore func()) {
	gcMu.Lock()
	if gcDepth == 0 {
		gcSaved = debug.SetGCPercent(ReplayGCPercent)
		if gcSaved > ReplayGCPercent || gcSaved < 0 {
			debug.SetGCPercent(gcSaved) // already more relaxed (or off): leave it
		}
	}
	gcDepth++
	gcMu.Unlock()
	return func() {
		gcMu.Lock()
		gcDepth--
		if gcDepth == 0 {
			debug.SetGCPercent(gcSaved)
		}
		gcMu.Unlock()
	}
}
