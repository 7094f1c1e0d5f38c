package main

import (
	"context"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
)

// appendParts returns the event lists an append writes besides its main stream's.
func appendParts(events.AppendRequest) [][]*events.Event { return nil }

func isNodeStream(*events.Event) bool { return false }

// createPoolLayout creates the pool; main's allocator knows one layout only.
func createPoolLayout(ctx context.Context, admin *allocator.Admin, p *events.PoolCreated, layout string) error {
	switch layout {
	case "default", "legacy":
		return admin.CreatePool(ctx, p)
	}
	return errors.Newf("--layout %q: want default or legacy", layout)
}
