package logio_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logio"
)

// archivedSite is a log with two archives taken from it: a1 holds every stream's
// events before the first snapshots, a2 those from the first snapshots to the second
// (node/n2 begins in a2, node/n3 is live only); all is every event as it was before
// archiving.
type archivedSite struct {
	*site
	a1, a2 string
	all    map[events.Stream][]events.Version // index i: #i+1
}

func newArchivedSite(t *testing.T) *archivedSite {
	t.Helper()
	s := &archivedSite{site: newSite(t)}
	ctx := ctxT(t)
	snapshotAll := func() int64 { return snapshotAll(t, s.site) }
	s.createPool("default", 3, "10.20.0.0/24")
	s.createPool("p2", 3, "10.22.0.0/24")
	s.startNode("n1")
	s.alloc("n1", "c1")
	s.alloc("n1", "c2")
	s.release("n1", "c1")
	cut1 := snapshotAll()
	s.createPool("p3", 3, "10.23.0.0/24")
	s.startNode("n2") // begins in a2
	s.alloc("n2", "c3")
	s.alloc("n1", "c4")
	cut2 := snapshotAll()
	s.createPool("p5", 3, "10.25.0.0/24")
	s.startNode("n3") // live only
	s.alloc("n3", "c5")
	s.alloc("n1", "c6")

	heads, rev, err := s.log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	s.all = map[events.Stream][]events.Version{}
	for st := range heads {
		if _, err := s.log.Read(ctx, st, 1, rev, func(e *events.Event) error {
			s.all[st] = append(s.all[st], events.Version{Seq: e.Seq, Hash: e.Hash})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	s.a1, s.a2 = filepath.Join(dir, "a1.jsonl"), filepath.Join(dir, "a2.jsonl")
	for _, a := range []struct {
		path string
		cut  int64
	}{{s.a1, cut1 + 1}, {s.a2, cut2 + 1}} {
		res, err := logio.Archive(ctx, s.log, a.path, logio.ArchiveOptions{Cut: logio.Cut{Revision: a.cut}, Now: t0})
		if err != nil {
			t.Fatalf("archive before %d: %+v", a.cut, err)
		}
		if res.Deleted == 0 {
			t.Fatalf("archive before %d: nothing archived", a.cut)
		}
	}
	return s
}

// snapshotAll snapshots every stream of s and returns the revision after.
func snapshotAll(t *testing.T, s *site) int64 {
	t.Helper()
	ctx := ctxT(t)
	heads, _, err := s.log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for st := range heads {
		if _, serr := logio.Snapshot(ctx, s.log, st, s.clock.Now, "test"); serr != nil {
			t.Fatalf("snapshot %s: %+v", st, serr)
		}
	}
	_, rev, err := s.log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// readArchives runs ReadArchives on paths and returns what fn was given, per stream in order.
func readArchives(t *testing.T, paths ...string) (*logio.Archives, map[events.Stream][]events.Version, error) {
	t.Helper()
	got := map[events.Stream][]events.Version{}
	a, err := logio.ReadArchives(ctxT(t), paths, func(e *events.Event) error {
		got[e.Stream] = append(got[e.Stream], events.Version{Seq: e.Seq, Hash: e.Hash})
		return nil
	})
	return a, got, err
}

// checkDelivered: every stream the archives hold was delivered from #first to its
// archived last, each event once, in sequence order, with the log's hashes.
func (s *archivedSite) checkDelivered(t *testing.T, what string, a *logio.Archives, got map[events.Stream][]events.Version, first func(events.Stream) uint64) {
	t.Helper()
	if len(got) != len(a.Streams()) || len(got) == 0 {
		t.Fatalf("%s: %d streams delivered, the archives hold %d", what, len(got), len(a.Streams()))
	}
	for st, vs := range got {
		last := a.Last(st)
		if last.Seq == 0 || last != s.all[st][last.Seq-1] {
			t.Fatalf("%s: %s: Last %+v, the log's #%d is %+v", what, st, last, last.Seq, s.all[st][last.Seq-1])
		}
		want := s.all[st][first(st)-1 : last.Seq]
		if fmt.Sprint(vs) != fmt.Sprint(want) {
			t.Fatalf("%s: %s delivered\n%v\nwant\n%v", what, st, vs, want)
		}
	}
}

func TestReadArchives(t *testing.T) {
	s := newArchivedSite(t)
	fromOne := func(events.Stream) uint64 { return 1 }
	for _, paths := range [][]string{{s.a1, s.a2}, {s.a2, s.a1}, {s.a1, s.a2, s.a1}, {s.a2, s.a2, s.a1}} {
		what := fmt.Sprint(paths)
		a, got, err := readArchives(t, paths...)
		if err != nil {
			t.Fatalf("%s: %+v", what, err)
		}
		s.checkDelivered(t, what, a, got, fromOne)
		// The files in chain order.
		var order []string
		for _, f := range a.Files {
			order = append(order, f.Path)
		}
		if order[0] != s.a1 || order[len(order)-1] != s.a2 {
			t.Fatalf("%s: files in the order %v", what, order)
		}
		for st := range got {
			if err := a.CheckFrom(st); err != nil {
				t.Fatalf("%s: CheckFrom(%s): %+v", what, st, err)
			}
		}
		if len(got) != 4 || got["node/n2"] == nil || got["node/n1"] == nil || got[events.ClusterStream] == nil {
			t.Fatalf("%s: delivered %v, want cluster, pool/default, node/n1, node/n2 (node/n3 is live only)", what, got)
		}
	}

	// The same file twice: its events once.
	a, got, err := readArchives(t, s.a1, s.a1)
	if err != nil {
		t.Fatalf("a1 twice: %+v", err)
	}
	s.checkDelivered(t, "a1 twice", a, got, fromOne)

	// Without the first archive: the stream a2 holds from #1 (node/n2) checks, the
	// others name the events missing.
	a, got, err = readArchives(t, s.a2)
	if err != nil {
		t.Fatalf("a2 alone: %+v", err)
	}
	var gaps int
	for st, vs := range got {
		cerr := a.CheckFrom(st)
		switch {
		case vs[0].Seq == 1 && cerr != nil:
			t.Fatalf("a2 alone: CheckFrom(%s), archived from #1: %+v", st, cerr)
		case vs[0].Seq > 1 && !errors.Is(cerr, logio.ErrArchiveGap):
			t.Fatalf("a2 alone: CheckFrom(%s), archived from #%d: err = %v, want ErrArchiveGap", st, vs[0].Seq, cerr)
		case vs[0].Seq > 1:
			gaps++
			if want := fmt.Sprintf("%s: events #1-#%d are in none", st, vs[0].Seq-1); !strings.Contains(cerr.Error(), want) {
				t.Fatalf("a2 alone: CheckFrom(%s): %q does not say %q", st, cerr, want)
			}
		}
	}
	if gaps == 0 || got["node/n2"] == nil || got["node/n2"][0].Seq != 1 || got[events.ClusterStream] == nil {
		t.Fatalf("a2 alone: %d streams with a gap, delivered %v", gaps, got)
	}
	s.checkDelivered(t, "a2 alone", a, got, func(st events.Stream) uint64 { return got[st][0].Seq })

	// fn's error stops the read and is returned as is.
	stop := errors.New("stop here")
	var n int
	if _, err = logio.ReadArchives(ctxT(t), []string{s.a1, s.a2}, func(*events.Event) error { n++; return stop }); err != stop || n != 1 { //nolint:errorlint // returned as is
		t.Fatalf("fn's error: err = %v after %d events, want it as is after 1", err, n)
	}
	// No path: empty Archives.
	if a, err = logio.ReadArchives(ctxT(t), nil, nil); err != nil || len(a.Files) != 0 || len(a.Streams()) != 0 {
		t.Fatalf("no path: %+v %v", a, err)
	}
}

// Join and JoinHead: the live log continues the archives; another log's events and heads
// do not.
func TestArchivesJoin(t *testing.T) {
	s := newArchivedSite(t)
	ctx := ctxT(t)
	a, _, err := readArchives(t, s.a2, s.a1)
	if err != nil {
		t.Fatal(err)
	}
	// Another log in the same etcd: the same streams, other contents.
	other := &site{t: t, cli: s.cli, log: events.NewEtcdLog(s.cli, events.EtcdConfig{Prefix: "/other/"}), clock: &tickClock{t: t0.AddDate(1, 0, 0)}}
	t.Cleanup(other.close)
	other.createPool("default", 4, "10.30.0.0/24")
	for i := 1; i <= 4; i++ {
		other.createPool(fmt.Sprintf("p%d", i), 4, fmt.Sprintf("10.3%d.0.0/24", i))
	}
	other.nodes = map[string]*allocator.Node{}
	other.workload("o", 6)
	snapshotAll(t, other) // streams longer than the archives'

	for st, last := range a.Streams() {
		var next *events.Event
		if _, err := s.log.Read(ctx, st, last.Seq+1, 0, func(e *events.Event) error { next = e; return errStopRead }); !errors.Is(err, errStopRead) {
			t.Fatalf("read live %s #%d: %v", st, last.Seq+1, err)
		}
		if err := a.Join(next); err != nil {
			t.Fatalf("Join(live %s #%d): %+v", st, next.Seq, err)
		}
		if err := a.JoinHead(st, last); err != nil {
			t.Fatalf("JoinHead(%s, the archives' last): %+v", st, err)
		}

		var foreign *events.Event
		if _, err := other.log.Read(ctx, st, last.Seq+1, 0, func(e *events.Event) error { foreign = e; return errStopRead }); !errors.Is(err, errStopRead) {
			t.Fatalf("read other %s #%d: %v", st, last.Seq+1, err)
		}
		err := a.Join(foreign)
		var be *logio.BrokenError
		if !errors.Is(err, logio.ErrBroken) || !errors.As(err, &be) || be.Stream != st || be.Seq != last.Seq+1 {
			t.Fatalf("Join(other log's %s #%d): err = %v, want ErrBroken at it", st, foreign.Seq, err)
		}

		heads := []events.Version{{}, {Seq: last.Seq, Hash: foreign.Prev}}
		if last.Seq > 1 {
			heads = append(heads, s.all[st][last.Seq-2])
		}
		for _, head := range heads {
			if err := a.JoinHead(st, head); !errors.Is(err, logio.ErrBroken) {
				t.Fatalf("JoinHead(%s, %+v), archives' last %+v: err = %v, want ErrBroken", st, head, last, err)
			}
		}
	}
}

var errStopRead = errors.New("stop reading")

// A tampered archive fails ReadArchives with the error Verifier.File gives, prefixed with
// its path, and nothing after the tampered event is delivered.
func TestReadArchivesCorrupt(t *testing.T) {
	s := newArchivedSite(t)
	raw, err := os.ReadFile(s.a2)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	tampered := strings.Replace(string(raw), "10.23.0.0/24", "10.23.1.0/24", 1)
	if tampered == string(raw) {
		t.Fatal("a2 does not hold pool p3's subnet")
	}
	if err = os.WriteFile(bad, []byte(tampered), 0o600); err != nil {
		t.Fatal(err)
	}
	_, verr := verifyFile(t, logio.NewVerifier(), bad)
	var be *logio.BrokenError
	if !errors.As(verr, &be) {
		t.Fatalf("verify the tampered file: %v", verr)
	}
	var after int
	for _, paths := range [][]string{{bad}, {s.a1, bad}, {bad, s.a1}} {
		after = 0
		_, rerr := logio.ReadArchives(ctxT(t), paths, func(e *events.Event) error {
			if e.Stream == be.Stream && e.Seq >= be.Seq {
				after++
			}
			return nil
		})
		if !errors.Is(rerr, logio.ErrBroken) || rerr.Error() != "archive "+bad+": "+verr.Error() {
			t.Fatalf("%v: err = %v, want %q", paths, rerr, "archive "+bad+": "+verr.Error())
		}
		if after != 0 {
			t.Fatalf("%v: %d events of %s from #%d delivered", paths, after, be.Stream, be.Seq)
		}
	}
	// A file that is not an archive at all.
	if err = os.WriteFile(bad, []byte("not json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := logio.ReadArchives(ctxT(t), []string{s.a1, bad}, func(*events.Event) error { return nil }); err == nil || !strings.HasPrefix(err.Error(), "archive "+bad+": ") {
		t.Fatalf("a file that is not an archive: err = %v", err)
	}
}
