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

// createPoolLayout creates the pool: default is what `coilctl pool create` makes (block
// streams), legacy the pool-stream layout of before (today's baseline).
func createPoolLayout(ctx context.Context, admin *allocator.Admin, p *events.PoolCreated, layout string) error {
	switch layout {
	case "default":
		return admin.CreatePool(ctx, p)
	case "legacy":
		return admin.CreatePool(ctx, p, allocator.LegacyLayout())
	}
	return errors.Newf("--layout %q: want default or legacy", layout)
}
