package allocator

import (
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/cockroachdb/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/safetext"
	"github.com/coil-net/coil/projection"
)

// Sentinel errors of node selectors and pool lifecycle.
var (
	// ErrInvalidSelector: a node selector or a node label list that does not parse.
	ErrInvalidSelector = errors.New("allocator: invalid node selector")
	// ErrNodeNotSelected: the node's labels do not match the pool's node selector.
	ErrNodeNotSelected = errors.New("allocator: node may not use pool")
	// ErrPoolDisabled: the pool hands out no new address (coilctl pool disable).
	ErrPoolDisabled = errors.New("allocator: pool disabled")
)

// RefusalError is a request refused by a pool's state: ErrPoolDisabled or
// ErrNodeNotSelected (errors.Is works through it). coild shows Msg as the CNI error's
// message and Detail and Hint as its details.
type RefusalError struct {
	Kind   error  // ErrPoolDisabled or ErrNodeNotSelected
	Pool   string // the pool refused
	Msg    string // what is refused: names the pool (and the node)
	Detail string // why: the reason given, the selector and the node's labels
	Hint   string // what to do
}

// Error is "Msg: Detail; Hint".
func (e *RefusalError) Error() string { return e.Msg + ": " + e.Details() }

// Details is "Detail; Hint".
func (e *RefusalError) Details() string { return e.Detail + "; " + e.Hint }

// Unwrap returns Kind.
func (e *RefusalError) Unwrap() error { return e.Kind }

// MaxSelector bounds a node selector's text.
const MaxSelector = 4096

// ParseNodeSelector checks a node selector in Kubernetes label-selector syntax
// ("zone=a,rack in (r1,r2),!gpu") and returns its canonical form (requirements sorted
// by key, as k8s.io/apimachinery/pkg/labels writes it), which is what the log records.
// An empty (or all white space) selector is "every node" and returns "".
func ParseNodeSelector(s string) (string, error) {
	if strings.TrimSpace(s) == "" {
		return "", nil
	}
	if len(s) > MaxSelector {
		return "", errors.Wrapf(ErrInvalidSelector, "node selector of %d bytes: at most %d", len(s), MaxSelector)
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return "", errors.Wrapf(ErrInvalidSelector, "node selector %s: %v (syntax: KEY=VALUE, KEY!=VALUE, KEY in (V1,V2), KEY notin (V1), KEY, !KEY, joined by commas)",
			safetext.Quote(s), err)
	}
	return sel.String(), nil
}

// ParseNodeLabels parses coild --node-labels: "KEY=VALUE,..." with Kubernetes' rules
// for label keys and values. An empty string is no labels.
func ParseNodeLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, errors.Wrapf(ErrInvalidSelector, "node label %s: want KEY=VALUE", safetext.Quote(kv))
		}
		if _, dup := out[k]; dup {
			return nil, errors.Wrapf(ErrInvalidSelector, "node label %s given twice", safetext.Quote(k))
		}
		out[k] = v
	}
	if _, err := labels.ValidatedSelectorFromSet(out); err != nil {
		return nil, errors.Wrapf(ErrInvalidSelector, "node labels %s: %v", safetext.Quote(s), err)
	}
	return out, nil
}

// FormatLabels writes labels as "k1=v1,k2=v2" sorted by key ("(none)" for none).
func FormatLabels(m map[string]string) string {
	if len(m) == 0 {
		return "(none)"
	}
	return projection.LabelsString(m)
}

// Selects reports whether a pool's node selector (canonical, "" = every node) admits a
// node with these labels. It parses the selector: callers on a hot path keep a
// selectorCache.
func Selects(selector string, nodeLabels map[string]string) (bool, error) {
	if selector == "" {
		return true, nil
	}
	sel, err := labels.Parse(selector)
	if err != nil {
		return false, errors.Wrapf(ErrInvalidSelector, "recorded node selector %s: %v", safetext.Quote(selector), err)
	}
	return sel.Matches(labels.Set(nodeLabels)), nil
}

// selectorCache keeps parsed selectors by their text, so that an ADD never parses one:
// a pool's selector is parsed the first time an ADD meets it (and again only when it
// changes). Guarded by the node's mutex.
type selectorCache map[string]labels.Selector

func (c selectorCache) get(s string) (labels.Selector, error) {
	if sel, ok := c[s]; ok {
		return sel, nil
	}
	sel, err := labels.Parse(s)
	if err != nil {
		return nil, errors.Wrapf(ErrInvalidSelector, "recorded node selector %s: %v", safetext.Quote(s), err)
	}
	if len(c) > 1024 { // selectors of deleted pools: start again
		clear(c)
	}
	c[s] = sel
	return sel, nil
}

// usable checks that this node may take addresses from pool: it is enabled, and its node
// selector (if any) matches the labels the node recorded (NodeLabelsSet). Caller holds n.mu.
func (n *Node) usable(pool *projection.Pool) error {
	if pool.Disabled {
		detail := "it hands out no new address"
		if pool.DisabledReason != "" {
			detail = "reason: " + pool.DisabledReason + "; " + detail
		}
		return &RefusalError{Kind: ErrPoolDisabled, Pool: pool.Name, Msg: fmt.Sprintf("pool %q is disabled", pool.Name),
			Detail: detail, Hint: fmt.Sprintf("`coilctl pool enable %s` enables it, or choose another pool", pool.Name)}
	}
	if pool.NodeSelector == "" {
		return nil
	}
	if n.selectors == nil {
		n.selectors = selectorCache{}
	}
	sel, err := n.selectors.get(pool.NodeSelector)
	if err != nil {
		return err
	}
	me := n.me()
	if sel.Matches(labels.Set(me.Labels)) {
		return nil
	}
	return &RefusalError{Kind: ErrNodeNotSelected, Pool: pool.Name, Msg: fmt.Sprintf("pool %q may not be used on node %q", pool.Name, n.cfg.Node),
		Detail: fmt.Sprintf("its node selector %q does not match the node's labels %s", pool.NodeSelector, FormatLabels(me.Labels)),
		Hint:   "choose another pool, label the node, or change the selector (coilctl pool set-node-selector)"}
}

// choosePool returns the pool a request allocates from: the requested one, or, when it
// is disabled, the first of the request's Fallbacks that exists and is enabled. The
// error of the requested pool is returned when no fallback serves. Caller holds n.mu.
func (n *Node) choosePool(ctx context.Context, req *Request) (*projection.Pool, error) {
	pool, err := n.lookupPool(ctx, req.Pool)
	if err != nil {
		return nil, err
	}
	err = n.usable(pool)
	if err == nil || !errors.Is(err, ErrPoolDisabled) {
		return pool, err
	}
	for _, name := range req.Fallbacks {
		if name == req.Pool {
			continue
		}
		fb, ferr := n.lookupPool(ctx, name)
		if ferr != nil {
			if errors.Is(ferr, ErrPoolNotFound) {
				continue
			}
			return nil, ferr
		}
		if ferr = n.usable(fb); errors.Is(ferr, ErrPoolDisabled) {
			continue
		}
		return fb, ferr
	}
	var re *RefusalError
	if len(req.Fallbacks) > 0 && errors.As(err, &re) {
		c := *re
		c.Detail += fmt.Sprintf("; no pool configured after it (%s) is enabled", strings.Join(req.Fallbacks, ", "))
		return nil, &c
	}
	return nil, err
}

// lookupPool finds a pool in the state; a pool not there is looked for in etcd once
// (the watch may not have brought one created a moment ago). Caller holds n.mu.
func (n *Node) lookupPool(ctx context.Context, name string) (*projection.Pool, error) {
	if pool := n.st.Cluster.Pools[name]; pool != nil {
		return pool, nil
	}
	// Only on this path, so a typo costs one read.
	if err := n.catchUp(ctx, events.ClusterStream); err != nil {
		return nil, errors.Wrapf(err, "pool %q is not known here and the log could not be read to check", name)
	}
	if pool := n.st.Cluster.Pools[name]; pool != nil {
		return pool, nil
	}
	return nil, errors.Wrapf(ErrPoolNotFound, "pool %q does not exist (see coilctl pool list)", name)
}

// Labels returns the node's labels as last recorded in its stream (nil before any).
func (n *Node) Labels() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.me().Labels)
}

// SetLabels records the node's labels (NodeLabelsSet) when they differ from the ones
// last recorded, and reports whether it appended. Below cluster feature level 1 it
// records nothing and returns ErrLevel (no pool can have a node selector then); the
// caller tries again later (coild does on every reconcile pass).
func (n *Node) SetLabels(ctx context.Context, lbls map[string]string) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.staleErr != nil {
		return false, n.staleErr
	}
	cur := n.me().Labels
	if cur != nil && maps.Equal(cur, lbls) {
		return false, nil
	}
	if err := CheckLevel(n.st.Cluster, events.Level1, "node labels"); err != nil {
		return false, err
	}
	if lbls == nil {
		lbls = map[string]string{}
	}
	ev := &events.Event{Time: n.cfg.Clock.Now(), Actor: n.cfg.Node, Payload: &events.NodeLabelsSet{Node: n.cfg.Node, Labels: maps.Clone(lbls)}}
	if err := n.appendOwn(ctx, []*events.Event{ev}); err != nil {
		return false, errors.Wrap(err, "record the node's labels")
	}
	n.log.Info("node labels recorded", "labels", FormatLabels(lbls))
	return true, nil
}
