package main

import (
	"context"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
)

// appendParts returns the event lists an append writes besides its main stream's.
func appendParts(req events.AppendRequest) [][]*events.Event {
	out := make([][]*events.Event, len(req.Parts))
	for i, p := range req.Parts {
		out[i] = p.Events
	}
	return out
}

// createPoolLayout creates the pool: block-streams (opt-in for now: `coilctl pool create
// --layout block-streams`) or pool-stream (what `coilctl pool create` makes today, the
// baseline).
func createPoolLayout(ctx context.Context, admin *allocator.Admin, p *events.PoolCreated, layout string) error {
	switch layout {
	case "block-streams":
		return admin.CreatePool(ctx, p, allocator.BlockStreams())
	case "pool-stream":
		return admin.CreatePool(ctx, p, allocator.LegacyLayout())
	}
	return errors.Newf("--layout %q: want block-streams or pool-stream", layout)
}
