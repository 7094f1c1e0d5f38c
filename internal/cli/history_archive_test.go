package cli_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/logio"
)

// Snapshot times of the replayed week: Monday and Tuesday 18:00.
var (
	monday18  = time.Date(2030, 1, 7, 18, 0, 0, 0, time.UTC)
	tuesday18 = time.Date(2030, 1, 8, 18, 0, 0, 0, time.UTC)
)

// replayWeek appends the golden week's events to e's log through Append, one append per
// original revision (the same batches, so the same streams and sequences), and snapshots
// every stream (logio.Snapshot, stamped then) as the events first reach each of snaps.
// mutate, if set, changes each event first (to make another log).
func (e *env) replayWeek(snaps []time.Time, mutate func(*events.Event)) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	evs := readGoldenLog(e.t, filepath.Join(logsDir(e.t), goldenLog))
	snapshot := func(at time.Time) {
		heads, _, err := e.log.Streams(ctx, "", 0)
		if err != nil {
			e.t.Fatal(err)
		}
		for s := range heads {
			if _, err := logio.Snapshot(ctx, e.log, s, func() time.Time { return at }, "coilctl:tester"); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	for i := 0; i < len(evs); {
		for len(snaps) > 0 && !evs[i].Time.Before(snaps[0]) {
			snapshot(snaps[0])
			snaps = snaps[1:]
		}
		j := i
		var batch []*events.Event
		for j < len(evs) && evs[j].Revision == evs[i].Revision {
			ev := &events.Event{Time: evs[j].Time, Actor: evs[j].Actor, Payload: evs[j].Payload}
			if mutate != nil {
				mutate(ev)
			}
			batch = append(batch, ev)
			j++
		}
		s := evs[i].Stream
		head, _, err := e.log.Head(ctx, s)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.log.Append(ctx, events.AppendRequest{Stream: s, Expected: head, Events: batch}); err != nil {
			e.t.Fatalf("replay %s #%d: %v", s, evs[i].Seq, err)
		}
		i = j
	}
}

// archiveQueries are the golden week's history queries (address, pod, container; table,
// json, yaml; --at; nothing found).
var archiveQueries = [][]string{
	{"history", "10.1.2.3"},
	{"history", "10.1.2.35"},
	{"history", "10.1.2.35", "--at", "2030-01-08T14:00:00Z"},
	{"history", "10.1.2.3", "-o", "json"},
	{"history", "fd00:2::1"},
	{"history", "10.1.7.7"},
	{"history", "--pod", "shop/web-3"},
	{"history", "--pod", "shop/web-84"},
	{"history", "--pod", "data/db-2", "-o", "yaml"},
	{"history", "--container", "F2"},
	{"history", "--container", "F22FECF9C283", "-o", "json"},
	{"history", "--pod", "shop/nope"},
}

// historyOutputs runs every archive query with extra flags and returns what each printed
// (stdout, exit code, stderr with revisions hidden).
func (e *env) historyOutputs(extra ...string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, q := range archiveQueries {
		r := e.runAt(weekNow, append(append([]string{}, q...), extra...)...)
		out[strings.Join(q, " ")] = r.stdout + "exit " + string(rune('0'+r.code)) + "\n" + sameRevision(r.stderr)
	}
	return out
}

func (e *env) sameOutputs(what string, got, want map[string]string) {
	e.t.Helper()
	for q, w := range want {
		if got[q] != w {
			e.t.Errorf("%s: coilctl %s differs: %s\n--- got\n%s--- want\n%s", what, q, firstDiff(got[q], w), got[q], w)
		}
	}
}

// TestHistoryArchive: the golden week replayed with snapshots on Monday and Tuesday
// 18:00; history (address, --pod, --container, with the attachment index) before any
// archive; then after `log archive --before` Tuesday 00:00, and again after a second
// archive --before Wednesday 00:00, history with --archive prints exactly what it printed
// before (the two archives given in either order, or repeated); without them it fails
// naming --archive; a missing archive, a tampered one (the error of `log verify --file`),
// one of an unknown format version and one of another log fail clearly.
func TestHistoryArchive(t *testing.T) {
	e := newEnv(t)
	e.replayWeek([]time.Time{monday18, tuesday18}, nil)
	e.buildIndex(goldenChunk)
	// The replay is the golden week (snapshots aside): the same table output.
	dir := filepath.Join(logsDir(t), "week")
	for _, name := range []string{"history-addr", "history-pod", "history-container"} { // (json and yaml show revisions: the snapshots moved them)
		want, err := os.ReadFile(filepath.Join(dir, name+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		cmd, _, _ := strings.Cut(strings.TrimPrefix(string(want), "$ coilctl "), "\n")
		if got := "$ coilctl " + cmd + "\n" + e.ok(strings.Fields(cmd)...); got != string(want) {
			t.Fatalf("replayed week: %s differs from %s: %s", cmd, name, firstDiff(got, string(want)))
		}
	}
	before := e.historyOutputs()

	tmp := t.TempDir()
	a1, a2 := filepath.Join(tmp, "a1.jsonl"), filepath.Join(tmp, "a2.jsonl")
	e.ok("log", "archive", "--before", "2030-01-08T00:00:00Z", "--to", a1, "--yes")
	e.fails(1, []string{"history", "--pod", "shop/web-3"}, "were archived", "pass the archive file with --archive FILE")
	e.fails(1, []string{"history", "10.1.2.3"}, "were archived", "pass the archive file with --archive FILE")
	e.sameOutputs("after one archive", e.historyOutputs("--archive", a1), before)

	e.ok("log", "archive", "--before", "2030-01-09T00:00:00Z", "--to", a2, "--yes")
	e.ok("log", "verify", "--file", a1, "--file", a2, "--then-live")
	e.sameOutputs("two archives, reversed", e.historyOutputs("--archive", a2, "--archive", a1), before)
	e.sameOutputs("two archives", e.historyOutputs("--archive", a1, "--archive", a2), before)
	e.sameOutputs("an archive twice", e.historyOutputs("--archive", a1, "--archive", a2, "--archive", a1), before)

	// The live part still reads through the index: chunks are skipped.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, read, skipped, err := cli.HistoryChunksArchived(ctx, e.cli, "shop/web-3", []string{a2, a1})
	if err != nil || n == 0 || skipped == 0 {
		t.Fatalf("indexed history with archives: %d holdings, %d chunks read, %d skipped, %v", n, read, skipped, err)
	}

	// Missing archives: the earlier one, the later one.
	e.fails(1, []string{"history", "--pod", "shop/web-3", "--archive", a2}, "events #1-#", "are in none of the archives given", "earlier 'coilctl log archive' run")
	e.fails(1, []string{"history", "10.1.2.3", "--archive", a2}, "are in none of the archives given")
	e.fails(1, []string{"history", "--pod", "shop/web-3", "--archive", a1}, "the archives given end at #", "later 'coilctl log archive' run")
	e.fails(1, []string{"history", "--pod", "shop/web-3", "--archive", filepath.Join(tmp, "nope.jsonl")}, "no such file")

	// A tampered archive fails as log verify --file does: the stream and sequence named.
	raw, err := os.ReadFile(a1)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(raw, []byte(`"addrs":["10.1.2.`))
	if i < 0 {
		t.Fatal("no address in the archive")
	}
	bad := append([]byte{}, raw...)
	bad[i+len(`"addrs":["10.1.2.`)]++ // one byte
	tampered := filepath.Join(tmp, "tampered.jsonl")
	if err := os.WriteFile(tampered, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	v := e.run("log", "verify", "--file", tampered)
	verifyMsg := strings.TrimSpace(strings.TrimPrefix(v.stderr, "coilctl: "))
	if v.code != 1 || !strings.HasPrefix(verifyMsg, "chain broken at node/") {
		t.Fatalf("log verify --file tampered: exit %d, %q", v.code, v.stderr)
	}
	e.fails(1, []string{"history", "--pod", "shop/web-3", "--archive", a2, "--archive", tampered}, "archive "+tampered+": "+verifyMsg)
	e.fails(1, []string{"history", "10.1.2.3", "--archive", tampered, "--archive", a2}, verifyMsg)

	// An unknown format version.
	future := filepath.Join(tmp, "future.jsonl")
	if err := os.WriteFile(future, bytes.Replace(raw, []byte(`{"coilLogExport":1,`), []byte(`{"coilLogExport":2,`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	v = e.run("log", "verify", "--file", future)
	verifyMsg = strings.TrimSpace(strings.TrimPrefix(v.stderr, "coilctl: "))
	if v.code != 1 || !strings.Contains(verifyMsg, "format version 2") {
		t.Fatalf("log verify --file future: exit %d, %q", v.code, v.stderr)
	}
	e.fails(1, []string{"history", "10.1.2.3", "--archive", future, "--archive", a2}, verifyMsg)

	// The archive of another log (another etcd, the same week a second later) does not join.
	o := newEnv(t)
	o.replayWeek([]time.Time{monday18, tuesday18}, func(ev *events.Event) { ev.Time = ev.Time.Add(time.Second) })
	other := filepath.Join(tmp, "other.jsonl")
	o.ok("log", "archive", "--before", "2030-01-09T00:00:00Z", "--to", other, "--yes")
	e.fails(1, []string{"history", "10.1.2.3", "--archive", other}, "the live log does not continue the archives given", "chain broken at cluster #", "previous-hash")
	e.fails(1, []string{"history", "--pod", "shop/web-3", "--archive", other}, "the live log does not continue the archives given", "chain broken at node/n")
}
