package exporter

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
)

// Defaults for Config.
const (
	DefaultTable    = 119
	DefaultProtocol = 30
)

// ErrInvalidPrefix: a block given to Ensure or Sync is not a valid, masked prefix.
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

// Exporter owns the export table. It remembers which blocks it knows to be in the table
// (exported: the set of the last successful Sync plus the blocks Ensure added since), so
// that Ensure and SyncChanged can answer without asking the kernel.
//
// Ensure, Sync and SyncChanged may be called from any goroutine. Changes to the table
// are serialised by one lock: a Sync reads the desired blocks and then the table, so
// two overlapping syncs could undo each other's newer view, and Ensure adds under the
// same lock.
type Exporter struct {
	r   Routes
	cfg Config

	// tableMu serialises changes to the table (Ensure, Sync).
	tableMu sync.Mutex
	// mu guards exported; it is held only for map work, never across a kernel call, so
	// Ensure's check for blocks already exported never waits for a sync in progress.
	mu       sync.Mutex
	exported map[netip.Prefix]bool
}

// Report says what a call of Ensure, Sync or SyncChanged did.
type Report struct {
	// Added and Removed are the routes added and deleted, sorted.
	Added, Removed []netip.Prefix
	// Blocks is the number of blocks a sync was asked for (Sync, SyncChanged).
	Blocks int
	// Skipped: nothing to do, known without listing the table (Ensure: every block is
	// exported; SyncChanged: the desired set is the exported one).
	Skipped bool
	// Waited is the time spent waiting for another call's change to the table; Took
	// the time spent changing it.
	Waited, Took time.Duration
}

// New returns an Exporter over r. It knows of no block in the table until the first
// Sync or Ensure.
func New(r Routes, cfg Config) *Exporter {
	if cfg.Table == 0 {
		cfg.Table = DefaultTable
	}
	if cfg.Protocol == 0 {
		cfg.Protocol = DefaultProtocol
	}
	return &Exporter{r: r, cfg: cfg, exported: map[netip.Prefix]bool{}}
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

// Ensure returns once every block of blocks is in the table: the fast path of an ADD,
// which must not return before its block's route exists. A block the exporter knows to
// be exported costs nothing (Report.Skipped when all are); a missing one gets its route
// with one AddBlackhole (idempotent), not a full Sync: a Sync lists the table, and
// during a burst of ADDs, with the burst's pod routes being added, that dump cost
// 35-260 ms here (the kernel restarts an interrupted dump). Routes to remove are left
// to the next Sync.
//
// Concurrent Ensures of one new block queue on the table's lock; each checks again
// under it, so only the first adds the route and the others return as soon as it is
// there (Skipped, with the time they Waited).
//
// Invalid blocks fail with ErrInvalidPrefix before anything is added. A failed add
// returns at once, wrapping the Routes error; Report.Added holds what was added before
// it. The caller should ask for a Sync, which retries.
func (e *Exporter) Ensure(ctx context.Context, blocks []netip.Prefix) (Report, error) {
	if e.Exported(blocks) { // only valid blocks are ever exported
		return Report{Skipped: true}, nil
	}
	if err := validate(blocks); err != nil {
		return Report{}, err
	}
	queued := time.Now()
	e.tableMu.Lock()
	defer e.tableMu.Unlock()
	rep := Report{Waited: time.Since(queued)}
	missing := e.missing(blocks)
	if len(missing) == 0 {
		rep.Skipped = true // a sync or another Ensure covered these blocks meanwhile
		return rep, nil
	}
	start := time.Now()
	for _, p := range missing {
		if err := e.r.AddBlackhole(ctx, e.cfg.Table, e.cfg.Protocol, p); err != nil {
			rep.Took = time.Since(start)
			return rep, errors.Wrapf(err, "exporter: add %s", p)
		}
		e.mu.Lock()
		e.exported[p] = true
		e.mu.Unlock()
		rep.Added = append(rep.Added, p)
	}
	rep.Took = time.Since(start)
	return rep, nil
}

// missing returns the blocks not known to be exported, sorted, without duplicates.
func (e *Exporter) missing(blocks []netip.Prefix) []netip.Prefix {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []netip.Prefix
	for _, p := range blocks {
		if !e.exported[p] {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

// Exported reports whether every block is known to be in the table (the last
// successful Sync's set, plus what Ensure added since).
func (e *Exporter) Exported(blocks []netip.Prefix) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range blocks {
		if !e.exported[p] {
			return false
		}
	}
	return true
}

// Sync makes the export table hold exactly one route per block that desired returns
// (IPv4 and IPv6 mixed; duplicates are fine): it lists the table, adds the missing
// blocks as blackhole routes and deletes the routes of the configured protocol that are
// not blocks. Idempotent: a Sync with the blocks the table holds changes nothing.
// It also repairs a table changed behind the exporter's back.
//
// desired is called once the table's lock is held, so a Sync never writes an older
// view of the blocks over a newer one (an ADD's Ensure that ran while this Sync waited
// added a block desired now returns).
//
// It validates all blocks first (ErrInvalidPrefix, nothing changed). Then it applies
// every change it can; Report.Added and Removed list the changes that succeeded, and
// err joins the failures (e.g. netplumb.ErrRouteConflict when a route Coil did not
// write holds a block's prefix). A later Sync retries what failed. Only a Sync without
// error makes its blocks the exported set.
func (e *Exporter) Sync(ctx context.Context, desired func() []netip.Prefix) (Report, error) {
	queued := time.Now()
	e.tableMu.Lock()
	defer e.tableMu.Unlock()
	return e.syncLocked(ctx, desired(), time.Since(queued))
}

// SyncChanged is Sync, unless the blocks desired returns are exactly the exported set:
// then it does nothing (Report.Skipped), without listing the table or waiting for
// another call's change (it checks before taking the table's lock and again under it).
// For a caller told that the blocks may have changed, most often when they did not:
// it does not repair a table changed behind the exporter's back (Sync does).
func (e *Exporter) SyncChanged(ctx context.Context, desired func() []netip.Prefix) (Report, error) {
	if e.exportedEqual(desired()) {
		return Report{Skipped: true}, nil
	}
	queued := time.Now()
	e.tableMu.Lock()
	defer e.tableMu.Unlock()
	want := desired()
	if e.exportedEqual(want) {
		return Report{Skipped: true, Blocks: len(want), Waited: time.Since(queued)}, nil
	}
	return e.syncLocked(ctx, want, time.Since(queued))
}

// exportedEqual reports whether want (duplicates allowed) is exactly the exported set.
func (e *Exporter) exportedEqual(want []netip.Prefix) bool {
	w := set(want)
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(w) != len(e.exported) {
		return false
	}
	for p := range w {
		if !e.exported[p] {
			return false
		}
	}
	return true
}

// syncLocked does a Sync; tableMu is held.
func (e *Exporter) syncLocked(ctx context.Context, blocks []netip.Prefix, waited time.Duration) (Report, error) {
	rep := Report{Blocks: len(blocks), Waited: waited}
	if err := validate(blocks); err != nil {
		return rep, err
	}
	start := time.Now()
	have, err := e.r.ListRoutes(ctx, e.cfg.Table, e.cfg.Protocol)
	if err != nil {
		rep.Took = time.Since(start)
		return rep, errors.Wrapf(err, "exporter: list table %d", e.cfg.Table)
	}
	add, remove := Diff(blocks, have)
	var errs []error
	for _, p := range add {
		if err := ctx.Err(); err != nil {
			rep.Took = time.Since(start)
			return rep, errors.Join(append(errs, errors.Wrap(err, "exporter"))...)
		}
		if err := e.r.AddBlackhole(ctx, e.cfg.Table, e.cfg.Protocol, p); err != nil {
			errs = append(errs, errors.Wrapf(err, "exporter: add %s", p))
			continue
		}
		rep.Added = append(rep.Added, p)
	}
	for _, p := range remove {
		if err := ctx.Err(); err != nil {
			rep.Took = time.Since(start)
			return rep, errors.Join(append(errs, errors.Wrap(err, "exporter"))...)
		}
		if err := e.r.DelRoute(ctx, e.cfg.Table, e.cfg.Protocol, p); err != nil {
			errs = append(errs, errors.Wrapf(err, "exporter: remove %s", p))
			continue
		}
		rep.Removed = append(rep.Removed, p)
	}
	rep.Took = time.Since(start)
	if len(errs) > 0 {
		return rep, errors.Join(errs...)
	}
	e.mu.Lock()
	e.exported = set(blocks)
	e.mu.Unlock()
	return rep, nil
}

func validate(blocks []netip.Prefix) error {
	for _, b := range blocks {
		if !b.IsValid() || b != b.Masked() || b.Addr().Is4In6() || b.Addr().Zone() != "" {
			return errors.Wrapf(ErrInvalidPrefix, "%s", b)
		}
	}
	return nil
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
