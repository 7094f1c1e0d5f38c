package allocator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// ErrLevel: a feature needs a cluster feature level above the cluster's, and the level
// cannot be raised now (a live coild runs a release that does not read it), or this build
// cannot raise it that far. See docs/operations.md, "Upgrading".
var ErrLevel = errors.New("allocator: cluster feature level too low")

// LiveNodes lists the live coilds with the feature level each records in its liveness
// key, and the store revision read at. *events.EtcdLog implements it; an Admin whose Log
// does not (the in-memory log) sees no live coild.
type LiveNodes interface {
	LiveNodes(ctx context.Context, ttl bool) ([]events.LiveNode, int64, error)
}

// levelSeen caches the highest cluster level an Admin has read: levels never go down, so
// a feature checked once stays allowed without reading the cluster stream again.
type levelSeen struct{ v atomic.Uint32 }

func (s *levelSeen) get() events.Level { return events.Level(s.v.Load()) }

func (s *levelSeen) saw(l events.Level) {
	for {
		cur := s.v.Load()
		if uint32(l) <= cur || s.v.CompareAndSwap(cur, uint32(l)) {
			return
		}
	}
}

// CheckLevel is the pure form of the gate, for writers that hold the cluster's projection
// (a node allocator): nil when the cluster is at level or above, else ErrLevel naming the
// feature. It costs one comparison.
func CheckLevel(c *projection.Cluster, level events.Level, feature string) error {
	if c.Level >= level {
		return nil
	}
	return errors.Wrapf(ErrLevel, "%s needs cluster feature level %d; the cluster is at level %d. Once every coild runs a release that reads level %d, `coilctl cluster version raise` raises it (docs/operations.md, \"Upgrading\")",
		feature, level, c.Level, level)
}

// RequireLevel is the gate for features that write event types older releases cannot
// read (every type has a minimum level: events.MinLevel). It returns nil when the
// cluster's feature level is at least level. Below it, it raises the level
// (ClusterLevelRaised) when every live coild reads that level, and refuses with ErrLevel
// otherwise, naming feature and the coilds that hold it back. A raise is never undone:
// the level only goes up, so a caller that got nil may write the feature's events at any
// later time.
func (a *Admin) RequireLevel(ctx context.Context, level events.Level, feature string) error {
	if a.level.get() >= level {
		return nil
	}
	c, err := a.Cluster(ctx)
	if err != nil {
		return err
	}
	if c.Level >= level {
		return nil
	}
	if level > events.CurrentLevel {
		return errors.Wrapf(ErrLevel, "%s needs cluster feature level %d; this build of coil supports up to %d: upgrade coilctl", feature, level, events.CurrentLevel)
	}
	_, _, err = a.RaiseLevel(ctx, level)
	if errors.Is(err, ErrLevel) {
		return errors.Wrapf(err, "%s needs cluster feature level %d, the cluster is at %d and", feature, level, c.Level)
	}
	return err
}

// behind lists the live nodes whose release reads less than level.
func behind(nodes []events.LiveNode, level events.Level) []events.LiveNode {
	var out []events.LiveNode
	for _, n := range nodes {
		if n.Level < level {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// DescribeNodeLevel is "n1 (level 0: a release before feature levels)" or "n2 (level 1,
// build abc)", for messages.
func DescribeNodeLevel(n events.LiveNode) string {
	switch {
	case n.Legacy:
		return fmt.Sprintf("%s (level 0: a release before feature levels)", n.Node)
	case n.Build != "":
		return fmt.Sprintf("%s (level %d, build %s)", n.Node, n.Level, n.Build)
	}
	return fmt.Sprintf("%s (level %d)", n.Node, n.Level)
}

func describeNodes(nodes []events.LiveNode) string {
	const most = 10
	parts := make([]string, 0, min(len(nodes), most)+1)
	for i, n := range nodes {
		if i == most {
			parts = append(parts, fmt.Sprintf("and %d more", len(nodes)-most))
			break
		}
		parts = append(parts, DescribeNodeLevel(n))
	}
	return strings.Join(parts, ", ")
}

func (a *Admin) liveNodes(ctx context.Context) ([]events.LiveNode, int64, error) {
	live := a.Live
	if live == nil {
		l, ok := a.Log.(LiveNodes)
		if !ok {
			return nil, 0, nil
		}
		live = l
	}
	nodes, rev, err := live.LiveNodes(ctx, false)
	if err != nil {
		return nil, 0, errors.Wrap(err, "list live coilds and their feature levels")
	}
	return nodes, rev, nil
}

// LevelStatus is the cluster's feature level, this build's, and every live coild's.
type LevelStatus struct {
	Cluster events.Level `json:"cluster"`
	// Supported is the highest level this build reads and writes.
	Supported events.Level      `json:"supported"`
	Nodes     []events.LiveNode `json:"nodes"`
	// Behind are the live nodes that read less than Supported: the cluster cannot be
	// raised to Supported while they run.
	Behind []string `json:"behind"`
}

// LevelStatus reads the cluster's level and the live coilds' levels.
func (a *Admin) LevelStatus(ctx context.Context) (*LevelStatus, error) {
	c, err := a.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	nodes, _, err := a.liveNodes(ctx)
	if err != nil {
		return nil, err
	}
	st := &LevelStatus{Cluster: c.Level, Supported: events.CurrentLevel, Nodes: nodes, Behind: []string{}}
	if st.Nodes == nil {
		st.Nodes = []events.LiveNode{}
	}
	for _, n := range behind(nodes, events.CurrentLevel) {
		st.Behind = append(st.Behind, n.Node)
	}
	return st, nil
}

// RaiseLevel raises the cluster's feature level to `to` (0: the highest this build
// supports) and returns the level before and after. Already at or above it: nothing is
// written. Refused (ErrLevel) above this build's level, and while any live coild reads
// less than `to`, naming them. The append is conditioned on no coild starting after the
// live coilds were listed (AppendRequest.NoNodeStartedSince): one that starts meanwhile
// makes it list them again.
func (a *Admin) RaiseLevel(ctx context.Context, to events.Level) (from, now events.Level, err error) {
	if to == 0 {
		to = events.CurrentLevel
	}
	if to > events.CurrentLevel {
		return 0, 0, errors.Wrapf(ErrLevel, "level %d: this build of coil supports feature levels up to %d", to, events.CurrentLevel)
	}
	var b backoff
	for {
		c, err := a.Cluster(ctx)
		if err != nil {
			return 0, 0, err
		}
		if c.Level >= to {
			return c.Level, c.Level, nil
		}
		nodes, rev, err := a.liveNodes(ctx)
		if err != nil {
			return c.Level, c.Level, err
		}
		if old := behind(nodes, to); len(old) > 0 {
			return c.Level, c.Level, errors.Wrapf(ErrLevel, "cannot raise the cluster from feature level %d to %d while %d live coild read less: %s. Upgrade their coild first (docs/operations.md, \"Upgrading\")",
				c.Level, to, len(old), describeNodes(old))
		}
		_, err = a.Log.Append(ctx, events.AppendRequest{
			Stream: events.ClusterStream, Expected: c.Head(),
			Events:             []*events.Event{a.event(&events.ClusterLevelRaised{Level: to})},
			NoNodeStartedSince: rev,
		})
		if err == nil {
			a.level.saw(to)
			return c.Level, to, nil
		}
		if !errors.Is(err, events.ErrConflict) {
			return c.Level, c.Level, errors.Wrap(err, "append ClusterLevelRaised")
		}
		if err := b.wait(ctx); err != nil {
			return c.Level, c.Level, err
		}
	}
}
