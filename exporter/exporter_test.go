package exporter_test

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/errors"
	"pgregory.net/rapid"

	"github.com/coil-net/coil/exporter"
)

type routeKey struct {
	table, proto int
	dst          netip.Prefix
}

// fakeRoutes is an in-memory routing table set with the Routes contract, including a
// conflict on AddBlackhole when another protocol holds the prefix. Safe for concurrent
// use; an AddBlackhole of a prefix in hold waits until the channel is closed.
type fakeRoutes struct {
	mu      sync.Mutex
	routes  map[routeKey]bool
	failAdd map[netip.Prefix]error
	hold    map[netip.Prefix]chan struct{}
	entered chan netip.Prefix // receives a held prefix when its AddBlackhole starts waiting
	calls   int
	lists   int
}

var errConflict = errors.New("fake: route owned by another protocol")

func newFake() *fakeRoutes {
	return &fakeRoutes{routes: map[routeKey]bool{}, failAdd: map[netip.Prefix]error{}, hold: map[netip.Prefix]chan struct{}{},
		entered: make(chan netip.Prefix, 16)}
}

func (f *fakeRoutes) ListRoutes(_ context.Context, table, protocol int) ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	var out []netip.Prefix
	for k := range f.routes {
		if k.table == table && k.proto == protocol {
			out = append(out, k.dst)
		}
	}
	return out, nil
}

func (f *fakeRoutes) AddBlackhole(_ context.Context, table, protocol int, dst netip.Prefix) error {
	f.mu.Lock()
	f.calls++
	hold := f.hold[dst]
	f.mu.Unlock()
	if hold != nil {
		f.entered <- dst
		<-hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failAdd[dst]; err != nil {
		return err
	}
	for k := range f.routes {
		if k.table == table && k.dst == dst && k.proto != protocol {
			return errConflict
		}
	}
	f.routes[routeKey{table, protocol, dst}] = true
	return nil
}

func (f *fakeRoutes) DelRoute(_ context.Context, table, protocol int, dst netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	delete(f.routes, routeKey{table, protocol, dst})
	return nil
}

// has reports whether Coil's route to dst is in table 119.
func (f *fakeRoutes) has(dst netip.Prefix) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes[routeKey{119, 30, dst}]
}

// counts returns the route changes and listings so far.
func (f *fakeRoutes) counts() (calls, lists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.lists
}

// syncTo runs e.Sync with a fixed set of blocks and returns how many routes it added
// and removed.
func syncTo(ctx context.Context, e *exporter.Exporter, blocks []netip.Prefix) (added, removed int, err error) {
	rep, err := e.Sync(ctx, func() []netip.Prefix { return blocks })
	return len(rep.Added), len(rep.Removed), err
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestDiff(t *testing.T) {
	add, remove := exporter.Diff(
		pfx("10.0.0.0/27", "10.0.0.32/27", "fd00::/120", "10.0.0.32/27"),
		pfx("10.0.0.32/27", "10.0.1.0/27", "fd00:1::/120"))
	if !slices.Equal(add, pfx("10.0.0.0/27", "fd00::/120")) {
		t.Fatalf("add = %v", add)
	}
	if !slices.Equal(remove, pfx("10.0.1.0/27", "fd00:1::/120")) {
		t.Fatalf("remove = %v", remove)
	}
	if a, r := exporter.Diff(nil, nil); a != nil || r != nil {
		t.Fatalf("empty diff = %v %v", a, r)
	}
	// Same address, different length: different blocks.
	if a, r := exporter.Diff(pfx("10.0.0.0/26"), pfx("10.0.0.0/27")); len(a) != 1 || len(r) != 1 {
		t.Fatalf("length-only difference = %v %v", a, r)
	}
}

func TestSyncOnlyTouchesItsTableAndProtocol(t *testing.T) {
	f := newFake()
	foreignProto := routeKey{119, 31, netip.MustParsePrefix("10.9.0.0/27")}
	foreignTable := routeKey{120, 30, netip.MustParsePrefix("10.8.0.0/27")}
	f.routes[foreignProto] = true
	f.routes[foreignTable] = true
	f.routes[routeKey{119, 30, netip.MustParsePrefix("10.7.0.0/27")}] = true // stale block
	e := exporter.New(f, exporter.Config{})
	if e.Config() != (exporter.Config{Table: 119, Protocol: 30}) {
		t.Fatalf("defaults = %+v", e.Config())
	}
	ctx := context.Background()
	added, removed, err := syncTo(ctx, e, pfx("10.0.0.0/27", "fd00::/120"))
	if err != nil || added != 2 || removed != 1 {
		t.Fatalf("Sync = %d, %d, %v", added, removed, err)
	}
	if !f.routes[foreignProto] || !f.routes[foreignTable] {
		t.Fatal("Sync touched a foreign route")
	}
	// Idempotent: no calls at all the second time.
	f.calls = 0
	added, removed, err = syncTo(ctx, e, pfx("fd00::/120", "10.0.0.0/27"))
	if err != nil || added != 0 || removed != 0 || f.calls != 0 {
		t.Fatalf("second Sync = %d, %d, %v (%d calls)", added, removed, err, f.calls)
	}
	// Empty desired set removes only ours.
	added, removed, err = syncTo(ctx, e, nil)
	if err != nil || added != 0 || removed != 2 || len(f.routes) != 2 {
		t.Fatalf("Sync(nil) = %d, %d, %v; routes %v", added, removed, err, f.routes)
	}
}

func TestSyncPartialFailure(t *testing.T) {
	f := newFake()
	f.routes[routeKey{119, 31, netip.MustParsePrefix("10.9.0.0/27")}] = true
	boom := errors.New("boom")
	f.failAdd[netip.MustParsePrefix("10.1.0.0/27")] = boom
	f.routes[routeKey{119, 30, netip.MustParsePrefix("10.7.0.0/27")}] = true
	e := exporter.New(f, exporter.Config{})
	added, removed, err := syncTo(context.Background(), e, pfx("10.9.0.0/27", "10.1.0.0/27", "10.2.0.0/27"))
	if added != 1 || removed != 1 {
		t.Fatalf("Sync counts = %d, %d", added, removed)
	}
	if !errors.Is(err, errConflict) || !errors.Is(err, boom) {
		t.Fatalf("Sync error = %v, want both failures", err)
	}
}

func TestSyncRejectsInvalidPrefixes(t *testing.T) {
	f := newFake()
	e := exporter.New(f, exporter.Config{Table: 200, Protocol: 40})
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("10.0.0.1/27")} {
		if _, _, err := syncTo(context.Background(), e, append(pfx("10.0.0.0/27"), bad)); !errors.Is(err, exporter.ErrInvalidPrefix) {
			t.Fatalf("Sync with %v = %v, want ErrInvalidPrefix", bad, err)
		}
	}
	if f.calls != 0 || len(f.routes) != 0 {
		t.Fatal("invalid Sync changed the table")
	}
}

// Property: after Sync, the table's routes of (table, protocol) equal the desired set,
// and everything else is as before.
func TestSyncProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		genPrefix := rapid.Custom(func(t *rapid.T) netip.Prefix {
			n := rapid.IntRange(0, 15).Draw(t, "n")
			if rapid.Bool().Draw(t, "v6") {
				return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 15: byte(n << 4)}), 124)
			}
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(n), 0}), 24)
		})
		f := newFake()
		others := map[routeKey]bool{}
		for _, p := range rapid.SliceOf(genPrefix).Draw(t, "have") {
			f.routes[routeKey{119, 30, p}] = true
		}
		for _, p := range rapid.SliceOf(genPrefix).Draw(t, "otherTable") {
			k := routeKey{120, 30, p}
			f.routes[k], others[k] = true, true
		}
		want := rapid.SliceOf(genPrefix).Draw(t, "want")
		e := exporter.New(f, exporter.Config{})
		if _, _, err := syncTo(context.Background(), e, want); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		got, _ := f.ListRoutes(context.Background(), 119, 30)
		a, r := exporter.Diff(want, got)
		if len(a) != 0 || len(r) != 0 {
			t.Fatalf("table differs from want: missing %v, extra %v", a, r)
		}
		for k := range others {
			if !f.routes[k] {
				t.Fatalf("foreign route %v removed", k)
			}
		}
	})
}
