package cli

import (
	"context"
	"sort"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// snapshot is the whole projected state at one etcd revision.
type snapshot struct {
	*projection.State
	Rev int64
}

// loadState replays every stream of the log at one revision into a projection.State,
// each from its newest snapshot (events.StartSeq).
func loadState(ctx context.Context, log events.Log) (*snapshot, error) {
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		return nil, errors.Wrap(err, "list streams")
	}
	st := projection.NewState()
	for _, s := range sortedStreams(heads) {
		from, err := events.StartSeq(ctx, log, s, rev)
		if err != nil {
			return nil, errors.Wrapf(err, "replay %s at revision %d", s, rev)
		}
		if _, err := log.Read(ctx, s, from, rev, st.Apply); err != nil {
			return nil, errors.Wrapf(err, "replay %s from #%d at revision %d", s, from, rev)
		}
	}
	return &snapshot{State: st, Rev: rev}, nil
}

func sortedStreams(heads map[events.Stream]events.Version) []events.Stream {
	out := make([]events.Stream, 0, len(heads))
	for s := range heads {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// addressesInUse counts, per block of pool, the addresses nodes hold in it.
func (s *snapshot) addressesInUse(pool string) map[uint32]int {
	out := map[uint32]int{}
	for _, n := range s.Nodes {
		for ref, u := range n.Use {
			if ref.Pool == pool && u.InUse > 0 {
				out[ref.Index] += u.InUse
			}
		}
	}
	return out
}

// nodeNames lists every node the log knows: with a node stream or owning a block.
func (s *snapshot) nodeNames() []string {
	set := map[string]bool{}
	for n := range s.Nodes {
		set[n] = true
	}
	for _, b := range s.Pools {
		for _, o := range b.Owners {
			set[o.Node] = true
		}
	}
	return sortedSet(set)
}

func (s *snapshot) knowsNode(name string) bool {
	for _, n := range s.nodeNames() {
		if n == name {
			return true
		}
	}
	return false
}

func sortedSet(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
