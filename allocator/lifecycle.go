package allocator

import (
	"context"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// MaxDisableReason bounds the reason recorded with PoolDisabled.
const MaxDisableReason = 1024

// SetNodeSelector sets a pool's node selector (canonical form, from ParseNodeSelector;
// "" lets every node use the pool): PoolNodeSelectorSet. It reports whether it
// appended: setting the selector the pool has is success and writes nothing. Nodes that
// no longer match keep the addresses they hold but take no new one from the pool. It
// needs cluster feature level 1 (RequireLevel).
func (a *Admin) SetNodeSelector(ctx context.Context, pool, selector string) (bool, error) {
	changed := false
	err := a.poolChange(ctx, pool, "a node selector", func(p *projection.Pool) []events.Payload {
		changed = p.NodeSelector != selector
		if !changed {
			return nil
		}
		return []events.Payload{&events.PoolNodeSelectorSet{Name: pool, Selector: selector}}
	})
	return changed, err
}

// DisablePool stops a pool from handing out blocks and addresses (PoolDisabled, with
// reason): addresses and blocks it has stay with their holders until released; nodes
// give its empty blocks back at once. Disabling a disabled pool is success and writes
// nothing (false). It needs cluster feature level 1.
func (a *Admin) DisablePool(ctx context.Context, pool, reason string) (bool, error) {
	if len(reason) > MaxDisableReason {
		return false, errors.Wrapf(ErrInvalidPool, "reason of %d bytes: at most %d", len(reason), MaxDisableReason)
	}
	changed := false
	err := a.poolChange(ctx, pool, "pool disable", func(p *projection.Pool) []events.Payload {
		changed = !p.Disabled
		if !changed {
			return nil
		}
		return []events.Payload{&events.PoolDisabled{Name: pool, Reason: reason}}
	})
	return changed, err
}

// EnablePool lets a disabled pool hand out addresses again (PoolEnabled). Enabling an
// enabled pool is success and writes nothing (false).
func (a *Admin) EnablePool(ctx context.Context, pool string) (bool, error) {
	changed := false
	err := a.poolChange(ctx, pool, "pool enable", func(p *projection.Pool) []events.Payload {
		changed = p.Disabled
		if !changed {
			return nil
		}
		return []events.Payload{&events.PoolEnabled{Name: pool}}
	})
	return changed, err
}

// poolChange appends what decide returns for an existing pool (nothing: no append),
// after the feature-level gate. An unknown pool is ErrPoolNotFound, checked before the
// gate so that a typo never raises the cluster's level.
func (a *Admin) poolChange(ctx context.Context, pool, feature string, decide func(*projection.Pool) []events.Payload) error {
	c, err := a.Cluster(ctx)
	if err != nil {
		return err
	}
	if _, ok := c.Pools[pool]; !ok {
		return errors.Wrapf(ErrPoolNotFound, "%q", pool)
	}
	if err := a.RequireLevel(ctx, events.Level1, feature); err != nil {
		return err
	}
	return a.clusterChange(ctx, func(c *projection.Cluster) (change, error) {
		p, ok := c.Pools[pool]
		if !ok {
			return change{}, errors.Wrapf(ErrPoolNotFound, "%q", pool)
		}
		return change{payloads: decide(p)}, nil
	})
}
