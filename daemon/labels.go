package daemon

import (
	"context"
	"maps"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
)

// desiredLabels are the node's labels as coild should record them: --node-labels, with
// the Node object's labels merged over them where Kubernetes is on (the Node object wins
// on a key both give: `kubectl label node` is where operators change labels). ok is false
// when the Node object could not be read: nothing is recorded then, so that an API
// server that is down never drops labels from the log.
func (d *Daemon) desiredLabels(ctx context.Context) (map[string]string, bool) {
	out := maps.Clone(d.cfg.NodeLabels)
	if out == nil {
		out = map[string]string{}
	}
	if d.pods == nil {
		return out, true
	}
	kl, err := d.pods.NodeLabels(ctx, d.cfg.Node)
	if err != nil {
		d.log.Warn("node labels: cannot read the Node object; the labels recorded in the log stay", "err", err)
		return nil, false
	}
	for k, v := range kl {
		if f, ok := out[k]; ok && f != v {
			d.log.Debug("node label from the Node object replaces --node-labels", "key", k, "node", v, "flag", f)
		}
		out[k] = v
	}
	return out, true
}

// recordLabels records the node's labels in its stream when they changed (NodeLabelsSet).
// Below cluster feature level 1 nothing is recorded (no pool can have a node selector
// then); each session start and reconcile pass tries again, so labels are recorded soon
// after the level is raised. A `kubectl label node` is recorded at once: the Node
// informer wakes the session (labelsWake).
func (d *Daemon) recordLabels(ctx context.Context) {
	want, ok := d.desiredLabels(ctx)
	if !ok {
		return
	}
	if _, err := d.node.SetLabels(ctx, want); err != nil && !errors.Is(err, allocator.ErrLevel) {
		d.log.Warn("record node labels", "err", err)
	}
}
