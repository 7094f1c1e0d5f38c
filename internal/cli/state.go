package cli

import (
	"context"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/readside"
)

// snapshot is the whole projected state at one etcd revision (readside.State), with the
// listings' views (inventory.go, pool.go) as methods.
type snapshot struct {
	*readside.State
}

// loadState replays every stream of the log at one revision (readside.Load).
func loadState(ctx context.Context, log events.Log) (*snapshot, error) {
	st, err := readside.Load(ctx, log)
	if err != nil {
		return nil, err
	}
	return &snapshot{State: st}, nil
}

func sortedStreams(heads map[events.Stream]events.Version) []events.Stream {
	return readside.StreamsOf(heads, nil)
}

// addressesInUse counts, per block of pool, the addresses nodes hold in it.
func (s *snapshot) addressesInUse(pool string) map[uint64]int { return s.AddressesInUse(pool) }

// nodeNames lists every node the log knows: with a node stream or owning a block.
func (s *snapshot) nodeNames() []string { return s.NodeNames() }

func (s *snapshot) knowsNode(name string) bool { return s.KnowsNode(name) }
