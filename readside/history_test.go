package readside_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
	"github.com/coil-net/coil/readside"
)

// describe is a holding in one line, for comparisons.
func describe(h *readside.Holding) string {
	to := "-"
	if h.To != nil {
		to = h.To.UTC().Format(time.RFC3339) + " (" + h.ReleaseReason + ")"
	}
	if h.Kind == readside.KindReservation {
		return fmt.Sprintf("%v %s#%d reserved by %s (%s) %s..%s", h.Addrs, h.Pool, h.Block, h.Actor, h.Reason,
			h.From.UTC().Format(time.RFC3339), to)
	}
	if h.Fixed {
		to += " fixed"
	}
	return fmt.Sprintf("%v %s#%d %s %s/%s %s/%s %s..%s", h.Addrs, h.Pool, h.Block, h.Node, h.ContainerID[:2], h.IfName,
		h.PodNamespace, h.PodName, h.From.UTC().Format(time.RFC3339), to)
}

func describeAll(hs []*readside.Holding) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(describe(h) + "\n")
	}
	return b.String()
}

func history(t *testing.T, log events.Log, q readside.Query, ix *readside.Index, archives ...string) []*readside.Holding {
	t.Helper()
	hs, _, err := readside.History(t.Context(), log, &q, ix, archives)
	if err != nil {
		t.Fatalf("history of %s: %v", q.String(), err)
	}
	return hs
}

// TestHistory: every holder of an address (on the nodes that owned its block, across a
// block changing hands), every address of a pod or a container prefix, paired with their
// releases and ordered by assignment time.
func TestHistory(t *testing.T) {
	log := memLog(t)
	smallLog(t, log)
	cases := []struct {
		q    readside.Query
		want string
	}{
		{readside.Query{Addr: addr("10.0.0.4")}, `
[10.0.0.4] p#1 n2 c2/eth0 data/db-0 2030-01-07T02:00:00Z..2030-01-07T04:00:00Z (CNI DEL)
[10.0.0.4] p#1 n1 c4/eth0 shop/web-0 2030-01-07T05:00:00Z..-`},
		{readside.Query{PodNamespace: "shop", PodName: "web-0"}, `
[10.0.0.0] p#0 n1 c1/eth0 shop/web-0 2030-01-07T02:00:00Z..2030-01-07T03:00:00Z (CNI DEL)
[10.0.0.4] p#1 n1 c4/eth0 shop/web-0 2030-01-07T05:00:00Z..-`},
		{readside.Query{Container: "c3"}, `
[10.0.0.1] p#0 n1 c3/eth0 shop/web-1 2030-01-07T03:00:00Z..-`},
		{readside.Query{Addr: addr("10.0.0.9")}, ``},
		{readside.Query{PodNamespace: "shop", PodName: "nope"}, ``},
	}
	for _, c := range cases {
		if got := describeAll(history(t, log, c.q, nil)); got != strings.TrimPrefix(c.want, "\n")+nlIf(c.want) {
			t.Errorf("history of %s:\n%s\nwant:\n%s", c.q.String(), got, strings.TrimPrefix(c.want, "\n"))
		}
	}
	hs := history(t, log, readside.Query{Addr: addr("10.0.0.4")}, nil)
	if !hs[0].HeldAt(at(2)) || hs[0].HeldAt(at(4)) || hs[0].HeldAt(at(1.9)) || !hs[1].HeldAt(at(100)) {
		t.Fatal("HeldAt: from inclusive, to exclusive, open-ended while held")
	}
	if hs[0].ReleasedBy != "test" || hs[0].FromRevision == 0 || hs[0].ToRevision <= hs[0].FromRevision {
		t.Fatalf("release actor %q, revisions %d..%d", hs[0].ReleasedBy, hs[0].FromRevision, hs[0].ToRevision)
	}
	b, err := json.Marshal(hs[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"to":null`) || !strings.Contains(string(b), `"fromRevision":`) || strings.Contains(string(b), "seq") {
		t.Fatalf("JSON form: %s", b)
	}
	for _, q := range []readside.Query{{}, {Addr: addr("10.0.0.4"), Container: "c1"}, {PodName: "web-0"}} {
		if _, _, err := readside.History(t.Context(), log, &q, nil, nil); !errors.Is(err, readside.ErrInvalidQuery) {
			t.Errorf("query %+v: got %v, want ErrInvalidQuery", q, err)
		}
	}
}

// TestHistoryClaimsAndReservations: the history of an address shows a fixed-address
// claim by a node that never owned the address's block (its stream is read), marked
// fixed, and the reservations that covered the address, from reserve to unreserve or
// to the pool's deletion.
func TestHistoryClaimsAndReservations(t *testing.T) {
	log := memLog(t)
	w := smallLog(t, log)
	p, n2 := events.PoolStream("p"), events.NodeStream("n2")
	w.add(events.ClusterStream, at(5.5), &events.ClusterLevelRaised{Level: 1})
	rng := []events.AddrRange{{First: addr("10.0.0.8"), Last: addr("10.0.0.9")}}
	w.add(events.ClusterStream, at(6), &events.AddressesReserved{Pool: "p", Ranges: rng, Reason: "printers"})
	w.add(events.ClusterStream, at(7), &events.AddressesUnreserved{Pool: "p", Ranges: rng, Reason: "printers gone"})
	// Block 2 (10.0.0.8-11) has no owner; n2 claims 10.0.0.9 in it.
	c5 := assigned("c5eeeeeeeeeeeeeeee", "data", "db-1", "p", 2, "10.0.0.9")
	w.add(p, at(8), &events.AddressClaimed{Addrs: c5.Addrs, Block: 2, Node: "n2", ContainerID: c5.ContainerID, IfName: c5.IfName,
		PodNamespace: "data", PodName: "db-1"})
	w.add(n2, at(8), c5)
	w.add(events.ClusterStream, at(9), &events.AddressesReserved{Pool: "p", Ranges: rng[:1], Reason: "again", AfterRelease: true})
	want := `[10.0.0.9] p#2 reserved by test (printers) 2030-01-07T06:00:00Z..2030-01-07T07:00:00Z (printers gone)
[10.0.0.9] p#2 n2 c5/eth0 data/db-1 2030-01-07T08:00:00Z..- fixed
[10.0.0.9] p#2 reserved by test (again) 2030-01-07T09:00:00Z..-
`
	if got := describeAll(history(t, log, readside.Query{Addr: addr("10.0.0.9")}, nil)); got != want {
		t.Fatalf("history of 10.0.0.9:\n%s\nwant:\n%s", got, want)
	}
	hs := history(t, log, readside.Query{Addr: addr("10.0.0.8")}, nil)
	if len(hs) != 2 || hs[0].Kind != readside.KindReservation || hs[1].To != nil || !hs[1].AfterRelease {
		t.Fatalf("history of 10.0.0.8:\n%s", describeAll(hs))
	}
	w.add(n2, at(10), released(c5, "CNI DEL"))
	w.add(events.ClusterStream, at(11), &events.PoolDeleted{Name: "p"})
	hs = history(t, log, readside.Query{Addr: addr("10.0.0.8")}, nil)
	if last := hs[len(hs)-1]; last.To == nil || last.ReleaseReason != "pool deleted" || !last.To.Equal(at(11)) {
		t.Fatalf("the pool's deletion ends its reservation:\n%s", describeAll(hs))
	}
	// A pod's history is not an address's: no reservations, no fixed mark.
	if got := describeAll(history(t, log, readside.Query{PodNamespace: "data", PodName: "db-1"}, nil)); strings.Contains(got, "reserved") ||
		strings.Contains(got, "fixed") || !strings.Contains(got, "c5/eth0") {
		t.Fatalf("history of data/db-1:\n%s", got)
	}
}

func nlIf(s string) string {
	if s == "" {
		return ""
	}
	return "\n"
}

// TestHistoryIndexed: with the attachment index built (chunks of 8 events), a pod's or
// a long container prefix's history reads fewer chunks and finds exactly what the full
// read finds, also for a holding released many chunks later, after a chunk was deleted
// and with a stale entry.
func TestHistoryIndexed(t *testing.T) {
	lg, cl := etcdLog(t)
	churnLog(t, lg, 120)
	ctx := t.Context()
	for _, s := range []events.Stream{events.NodeStream("n1"), events.NodeStream("n2")} {
		if _, err := logindex.Build(ctx, lg, s, logindex.BuildOptions{ChunkSize: 8}); err != nil {
			t.Fatal(err)
		}
	}
	queries := []readside.Query{
		{PodNamespace: "shop", PodName: "web-7"}, {PodNamespace: "shop", PodName: "db-0"},
		{Container: cid(42)[:12]}, {Container: cid(1000)}, {Container: cid(3)[:4]}, {PodNamespace: "shop", PodName: "nope"},
	}
	check := func(what string, wantSkips bool) {
		t.Helper()
		for _, q := range queries {
			full := describeAll(history(t, lg, q, nil))
			ix := &readside.Index{Store: lg, Timeout: time.Minute}
			got := describeAll(history(t, lg, q, ix))
			if got != full {
				t.Fatalf("%s: indexed history of %s:\n%s\nfull read:\n%s", what, q.String(), got, full)
			}
			read, skipped := ix.Chunks()
			short := q.Container != "" && len(q.Container) < 12
			if short && read+skipped != 0 {
				t.Fatalf("%s: %s is too short for the index but %d chunks were read, %d skipped", what, q.String(), read, skipped)
			}
			if !short && wantSkips && skipped == 0 {
				t.Fatalf("%s: %s skipped no chunk (%d read)", what, q.String(), read)
			}
		}
	}
	check("built", true)
	if full := history(t, lg, readside.Query{PodNamespace: "shop", PodName: "db-0"}, nil); len(full) != 2 || full[0].To == nil {
		t.Fatalf("db-0: %s", describeAll(full))
	}
	// A chunk missing in the middle is read; an entry of another log is ignored.
	if _, err := cl.Delete(ctx, lg.Keys().Index(events.NodeStream("n1"), 17)); err != nil {
		t.Fatal(err)
	}
	forged := logindex.NewEntry(events.NodeStream("n2"), 9, 16, events.Hash{1}, nil)
	v, err := forged.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Put(ctx, lg.Keys().Index(events.NodeStream("n2"), 9), string(v)); err != nil {
		t.Fatal(err)
	}
	check("a chunk deleted, an entry forged", true)
}

// TestHistoryArchived: once early events are archived, history fails naming the archive
// (events.ErrCompacted), also for an address; with the archive file it is what it was
// before the archive; a missing earlier archive is logio's gap error.
func TestHistoryArchived(t *testing.T) {
	queries := []readside.Query{{Addr: addr("10.0.0.4")}, {Addr: addr("10.0.0.1")}, {PodNamespace: "shop", PodName: "web-0"}, {Container: "c3"}}
	want := map[string]string{}
	lg, _, file, _ := archivedLog(t, func(lg *events.EtcdLog) {
		for _, q := range queries {
			want[q.String()] = describeAll(history(t, lg, q, nil))
		}
	})
	for _, q := range queries {
		_, _, err := readside.History(t.Context(), lg, &q, nil, nil)
		if !errors.Is(err, events.ErrCompacted) || !contains(err, "pass the archive file with --archive FILE") {
			t.Fatalf("history of %s without the archive: %v", q.String(), err)
		}
		if got := describeAll(history(t, lg, q, nil, file)); got != want[q.String()] {
			t.Fatalf("history of %s with the archive:\n%s\nbefore the archive:\n%s", q.String(), got, want[q.String()])
		}
	}
	if !strings.Contains(want["address 10.0.0.1"], "2030-01-07T03:00:00Z..2030-01-07T07:00:00Z") {
		t.Fatalf("web-1's holding spans the archive's end: %s", want["address 10.0.0.1"])
	}
	_, _, err := readside.History(context.Background(), lg, &queries[0], nil, []string{file + ".missing"})
	if err == nil || !contains(err, "no such file") {
		t.Fatalf("missing archive file: %v", err)
	}
}
