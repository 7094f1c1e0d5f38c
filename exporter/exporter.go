package exporter

import (
	"context"
	"net/netip"
	"slices"

	"github.com/cockroachdb/errors"
)

// Defaults for Config.
const (
	DefaultTable    = 119
	DefaultProtocol = 30
)

// ErrInvalidPrefix: a block given to Sync is not a valid, masked prefix.
var ErrInvalidPrefix = errors.New("exporter: invalid block prefix")

// Routes is the route-table access the exporter needs. *netplumb.Plumber implements it.
// Coil owns a route of the export table only if it is a blackhole route of Coil's
// protocol: the exporter never lists, replaces or deletes any other route, and the
// kernel's own tables (0, 253 default, 254 main, 255 local) are refused.
type Routes interface {
	// ListRoutes returns the destinations of the blackhole routes in table with this
	// protocol (IPv4 and IPv6); routes of other protocols or types are not returned.
	ListRoutes(ctx context.Context, table, protocol int) ([]netip.Prefix, error)
	// AddBlackhole makes sure a blackhole route to dst with this protocol is in table.
	// Idempotent. It must not modify any other route to dst (it fails instead).
	AddBlackhole(ctx context.Context, table, protocol int, dst netip.Prefix) error
	// DelRoute deletes the blackhole route to dst with this protocol from table.
	// Idempotent (no such route is success); no other route is deleted.
	DelRoute(ctx context.Context, table, protocol int, dst netip.Prefix) error
}

// Config selects the export table and the route protocol that marks Coil's routes there.
// Zero fields get the defaults (119, 30).
type Config struct {
	Table    int
	Protocol int
}

// Exporter syncs the export table. It holds no state besides its configuration; Sync
// may be called from one goroutine at a time.
type Exporter struct {
	r   Routes
	cfg Config
}

// New returns an Exporter over r.
func New(r Routes, cfg Config) *Exporter {
	if cfg.Table == 0 {
		cfg.Table = DefaultTable
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = DefaultProtocol
	}
	return &Exporter{r: r, cfg: cfg}
}

// Config returns the effective configuration.
func (e *Exporter) Config() Config { return e.cfg }

// List returns the routes the export table holds now (Coil's blackhole routes of the
// configured protocol), sorted. Read-only.
func (e *Exporter) List(ctx context.Context) ([]netip.Prefix, error) {
	return e.r.ListRoutes(ctx, e.cfg.Table, e.cfg.Protocol)
}

// Diff computes what Sync does: the blocks to add (wanted, not present) and the routes to
// remove (present, not wanted), both sorted and without duplicates. Pure.
func Diff(want, have []netip.Prefix) (add, remove []netip.Prefix) {
	w := set(want)
	h := set(have)
	for p := range w {
		if !h[p] {
			add = append(add, p)
		}
	}
	for p := range h {
		if !w[p] {
			remove = append(remove, p)
		}
	}
	slices.SortFunc(add, comparePrefix)
	slices.SortFunc(remove, comparePrefix)
	return add, remove
}

// Sync makes the export table hold exactly one route per block in blocks (IPv4 and IPv6
// mixed; duplicates are fine): it adds the missing blocks as blackhole routes and
// deletes routes of the configured protocol that are not blocks. Idempotent: a Sync with
// the same blocks as the table holds changes nothing and returns (0, 0, nil).
//
// It validates all blocks first (ErrInvalidPrefix, nothing changed). Then it applies
// every change it can; added and removed count the changes that succeeded, and err
// joins the failures (e.g. netplumb.ErrRouteConflict when a route of another protocol
// holds a block's prefix). A later Sync retries what failed.
func (e *Exporter) Sync(ctx context.Context, blocks []netip.Prefix) (added, removed int, err error) {
	for _, b := range blocks {
		if !b.IsValid() || b != b.Masked() || b.Addr().Is4In6() || b.Addr().Zone() != "" {
			return 0, 0, errors.Wrapf(ErrInvalidPrefix, "%s", b)
		}
	}
	have, err := e.r.ListRoutes(ctx, e.cfg.Table, e.cfg.Protocol)
	if err != nil {
		return 0, 0, errors.Wrapf(err, "exporter: list table %d", e.cfg.Table)
	}
	add, remove := Diff(blocks, have)
	var errs []error
	for _, p := range add {
		if err := ctx.Err(); err != nil {
			return added, removed, errors.Join(append(errs, errors.Wrap(err, "exporter"))...)
		}
		if err := e.r.AddBlackhole(ctx, e.cfg.Table, e.cfg.Protocol, p); err != nil {
			errs = append(errs, errors.Wrapf(err, "exporter: add %s", p))
			continue
		}
		added++
	}
	for _, p := range remove {
		if err := ctx.Err(); err != nil {
			return added, removed, errors.Join(append(errs, errors.Wrap(err, "exporter"))...)
		}
		if err := e.r.DelRoute(ctx, e.cfg.Table, e.cfg.Protocol, p); err != nil {
			errs = append(errs, errors.Wrapf(err, "exporter: remove %s", p))
			continue
		}
		removed++
	}
	return added, removed, errors.Join(errs...)
}

func set(ps []netip.Prefix) map[netip.Prefix]bool {
	m := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		m[p] = true
	}
	return m
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
