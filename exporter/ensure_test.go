package exporter_test

import (
	"context"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/exporter"
)

// Ensure, the ADD fast path: it adds only the blocks it does not know to be exported,
// one route each, never lists the table, and costs nothing once they are there.
func TestEnsureAddsOnlyMissing(t *testing.T) {
	f := newFake()
	e := exporter.New(f, exporter.Config{})
	ctx := context.Background()
	rep, err := e.Ensure(ctx, pfx("10.0.0.32/27", "fd00::/120", "10.0.0.32/27"))
	if err != nil || rep.Skipped || !slices.Equal(rep.Added, pfx("10.0.0.32/27", "fd00::/120")) {
		t.Fatalf("first Ensure = %+v, %v", rep, err)
	}
	if calls, lists := f.counts(); calls != 2 || lists != 0 {
		t.Fatalf("first Ensure: %d route changes, %d listings; want 2, 0", calls, lists)
	}
	if !f.has(netip.MustParsePrefix("10.0.0.32/27")) || !f.has(netip.MustParsePrefix("fd00::/120")) {
		t.Fatal("routes missing after Ensure")
	}
	rep, err = e.Ensure(ctx, pfx("fd00::/120", "10.0.0.32/27"))
	if err != nil || !rep.Skipped || len(rep.Added) != 0 {
		t.Fatalf("second Ensure = %+v, %v; want skipped", rep, err)
	}
	rep, err = e.Ensure(ctx, pfx("10.0.0.32/27", "10.0.0.0/27"))
	if err != nil || !slices.Equal(rep.Added, pfx("10.0.0.0/27")) {
		t.Fatalf("third Ensure = %+v, %v; want only 10.0.0.0/27 added", rep, err)
	}
	if calls, lists := f.counts(); calls != 3 || lists != 0 {
		t.Fatalf("after three Ensures: %d route changes, %d listings; want 3, 0", calls, lists)
	}
	if !e.Exported(pfx("10.0.0.0/27", "10.0.0.32/27", "fd00::/120")) || e.Exported(pfx("10.0.0.64/27")) {
		t.Fatal("Exported disagrees with what Ensure added")
	}
}

// Concurrent Ensures of one new block (a burst of ADDs landing in it) add its route
// once, and none returns before the route is in the table.
func TestEnsureConcurrentAddsOnce(t *testing.T) {
	f := newFake()
	block := netip.MustParsePrefix("10.1.0.0/27")
	release := make(chan struct{})
	f.hold[block] = release
	e := exporter.New(f, exporter.Config{})
	ctx := context.Background()
	const n = 16
	var wg sync.WaitGroup
	errs := make([]error, n)
	before := make([]bool, n) // the route was missing when Ensure returned
	run := func(i int) {
		defer wg.Done()
		_, errs[i] = e.Ensure(ctx, []netip.Prefix{block})
		before[i] = !f.has(block)
	}
	wg.Add(1)
	go run(0)
	<-f.entered // the first holds the table's lock, in AddBlackhole
	for i := 1; i < n; i++ {
		wg.Add(1)
		go run(i)
	}
	close(release)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || before[i] {
			t.Fatalf("Ensure %d: err %v, returned before the route existed: %v", i, errs[i], before[i])
		}
	}
	if calls, _ := f.counts(); calls != 1 {
		t.Fatalf("%d AddBlackhole calls for %d Ensures of one block; want 1", calls, n)
	}
}

// A failed add stops Ensure with the Routes error; what it added before stays known,
// the failed block does not, and the next Ensure adds it.
func TestEnsureFailure(t *testing.T) {
	f := newFake()
	boom := errors.New("boom")
	bad := netip.MustParsePrefix("10.0.0.32/27")
	f.failAdd[bad] = boom
	e := exporter.New(f, exporter.Config{})
	ctx := context.Background()
	rep, err := e.Ensure(ctx, pfx("10.0.0.64/27", "10.0.0.32/27", "10.0.0.0/27"))
	if !errors.Is(err, boom) || !slices.Equal(rep.Added, pfx("10.0.0.0/27")) {
		t.Fatalf("Ensure = %+v, %v; want 10.0.0.0/27 added, then boom", rep, err)
	}
	if !e.Exported(pfx("10.0.0.0/27")) || e.Exported(pfx("10.0.0.32/27")) || e.Exported(pfx("10.0.0.64/27")) {
		t.Fatal("Exported after a failed Ensure: want only the block added before the failure")
	}
	delete(f.failAdd, bad)
	rep, err = e.Ensure(ctx, pfx("10.0.0.64/27", "10.0.0.32/27", "10.0.0.0/27"))
	if err != nil || !slices.Equal(rep.Added, pfx("10.0.0.32/27", "10.0.0.64/27")) {
		t.Fatalf("Ensure after the failure = %+v, %v", rep, err)
	}
	// A conflict (a route Coil did not write holds the prefix) is reported, not replaced.
	foreign := routeKey{119, 31, netip.MustParsePrefix("10.9.0.0/27")}
	f.routes[foreign] = true
	if _, err = e.Ensure(ctx, pfx("10.9.0.0/27")); !errors.Is(err, errConflict) || !f.routes[foreign] {
		t.Fatalf("Ensure over a foreign route = %v (route kept: %v)", err, f.routes[foreign])
	}
}

func TestEnsureRejectsInvalidPrefixes(t *testing.T) {
	f := newFake()
	e := exporter.New(f, exporter.Config{})
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("10.0.0.1/27"), netip.MustParsePrefix("::ffff:10.0.0.0/120")} {
		if _, err := e.Ensure(context.Background(), append(pfx("10.0.0.0/27"), bad)); !errors.Is(err, exporter.ErrInvalidPrefix) {
			t.Fatalf("Ensure with %v = %v, want ErrInvalidPrefix", bad, err)
		}
	}
	if calls, _ := f.counts(); calls != 0 {
		t.Fatal("an invalid Ensure changed the table")
	}
}

// The exported set is the last successful Sync's: SyncChanged skips (no listing) when
// the desired blocks are that set, syncs when they differ, and a failed Sync leaves
// the set so that the next SyncChanged tries again. Sync always lists and repairs.
func TestSyncChangedSkipsOnlyWhatIsExported(t *testing.T) {
	f := newFake()
	e := exporter.New(f, exporter.Config{})
	ctx := context.Background()
	blocks := pfx("10.0.0.0/27", "fd00::/120")
	desired := func() []netip.Prefix { return blocks }
	rep, err := e.SyncChanged(ctx, desired)
	if err != nil || rep.Skipped || len(rep.Added) != 2 || rep.Blocks != 2 {
		t.Fatalf("first SyncChanged = %+v, %v", rep, err)
	}
	_, lists := f.counts()
	if rep, err = e.SyncChanged(ctx, desired); err != nil || !rep.Skipped {
		t.Fatalf("SyncChanged, blocks unchanged = %+v, %v; want skipped", rep, err)
	}
	if _, l := f.counts(); l != lists {
		t.Fatal("a skipped SyncChanged listed the table")
	}
	// A route deleted behind the exporter's back: SyncChanged does not see it, Sync
	// repairs it.
	delete(f.routes, routeKey{119, 30, netip.MustParsePrefix("fd00::/120")})
	if rep, _ = e.SyncChanged(ctx, desired); !rep.Skipped {
		t.Fatalf("SyncChanged = %+v; want skipped", rep)
	}
	if rep, err = e.Sync(ctx, desired); err != nil || !slices.Equal(rep.Added, pfx("fd00::/120")) {
		t.Fatalf("Sync = %+v, %v; want fd00::/120 added back", rep, err)
	}
	// Blocks changed: a block goes, another comes.
	blocks = pfx("10.0.0.0/27", "10.0.0.32/27")
	rep, err = e.SyncChanged(ctx, desired)
	if err != nil || !slices.Equal(rep.Added, pfx("10.0.0.32/27")) || !slices.Equal(rep.Removed, pfx("fd00::/120")) {
		t.Fatalf("SyncChanged after a change = %+v, %v", rep, err)
	}
	// A failed Sync: the exported set stays the last good one, so SyncChanged retries.
	boom := errors.New("boom")
	f.failAdd[netip.MustParsePrefix("10.0.0.64/27")] = boom
	blocks = pfx("10.0.0.0/27", "10.0.0.32/27", "10.0.0.64/27")
	if _, err = e.SyncChanged(ctx, desired); !errors.Is(err, boom) {
		t.Fatalf("failing SyncChanged = %v, want boom", err)
	}
	delete(f.failAdd, netip.MustParsePrefix("10.0.0.64/27"))
	if rep, err = e.SyncChanged(ctx, desired); err != nil || rep.Skipped || !slices.Equal(rep.Added, pfx("10.0.0.64/27")) {
		t.Fatalf("SyncChanged after a failed sync = %+v, %v; want the failed block added", rep, err)
	}
	// Ensure then SyncChanged: a block Ensure added counts as exported.
	if _, err = e.Ensure(ctx, pfx("10.0.0.96/27")); err != nil {
		t.Fatal(err)
	}
	blocks = append(blocks, netip.MustParsePrefix("10.0.0.96/27"))
	if rep, _ = e.SyncChanged(ctx, desired); !rep.Skipped {
		t.Fatalf("SyncChanged after Ensure added the new block = %+v; want skipped", rep)
	}
}

// A Sync reads the desired blocks only once it holds the table's lock: a block an
// Ensure was adding while the Sync waited is in the desired set the Sync reads, so the
// Sync does not delete it (an older view of the blocks never overwrites a newer one).
func TestSyncReadsDesiredAfterEnsure(t *testing.T) {
	f := newFake()
	old := netip.MustParsePrefix("10.0.0.0/27")
	fresh := netip.MustParsePrefix("10.0.0.32/27")
	e := exporter.New(f, exporter.Config{})
	ctx := context.Background()
	if _, _, err := syncTo(ctx, e, []netip.Prefix{old}); err != nil {
		t.Fatal(err)
	}
	// An ADD took fresh and its Ensure is adding the route (held in AddBlackhole) when
	// a Sync starts.
	release := make(chan struct{})
	f.hold[fresh] = release
	ensured := make(chan error, 1)
	go func() { _, err := e.Ensure(ctx, []netip.Prefix{fresh}); ensured <- err }()
	<-f.entered
	synced, started := make(chan error, 1), make(chan struct{})
	var sawRoute bool
	go func() {
		close(started)
		_, err := e.Sync(ctx, func() []netip.Prefix {
			sawRoute = f.has(fresh)
			return []netip.Prefix{old, fresh}
		})
		synced <- err
	}()
	// Let the Sync run up to the lock before the Ensure finishes (a Sync that read its
	// blocks first would read them now).
	<-started
	for range 100 {
		runtime.Gosched()
	}
	close(release)
	if err := <-ensured; err != nil {
		t.Fatal(err)
	}
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if !sawRoute || !f.has(fresh) || !f.has(old) {
		t.Fatalf("Sync read the blocks before the Ensure finished (%v), or a block is missing: fresh %v, old %v", !sawRoute, f.has(fresh), f.has(old))
	}
}
