package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
)

// The moments of TestStateArchive: before the first archive's snapshot (Monday 18:00),
// between the two archives' snapshots, after both.
const (
	mondayAt  = "2030-01-07T14:00:00Z"
	tuesdayAt = "2030-01-08T14:00:00Z"
	thursday  = "2030-01-10T08:00:00Z"
)

// stateQueries are state and diff at those moments (and as revisions, filled in by
// TestStateArchive), table and json.
func stateQueries(monRev, tueRev string) [][]string {
	return [][]string{
		{"state", "--at", mondayAt},
		{"state", "--at", mondayAt, "-o", "json"},
		{"state", "--at", "2030-01-07T09:00:00Z"}, // the week's first events
		{"state", "--at", tuesdayAt},
		{"state", "--at", tuesdayAt, "-o", "json"},
		{"state", "--at", "2d"}, // Tuesday 09:00
		{"state", "--at", thursday},
		{"state", "--at", thursday, "-o", "json"},
		{"state", "--revision", monRev},
		{"state", "--revision", tueRev, "-o", "json"},
		{"diff", mondayAt, tuesdayAt},
		{"diff", mondayAt, tuesdayAt, "-o", "json"},
		{"diff", tuesdayAt, thursday},
		{"diff", mondayAt, thursday, "-o", "json"},
		{"diff", "2030-01-09T11:00:00Z", "2030-01-09T11:30:00Z"},
		{"diff", monRev, tueRev},
		{"diff", tuesdayAt, mondayAt, "-o", "json"},
	}
}

// logNowRE is the current revision state prints (archiving moves it on).
var logNowRE = regexp.MustCompile(`log now at revision [0-9]+`)

// stateOutputs runs every query with extra flags and returns what each printed (stdout
// with the log's current revision hidden, the exit code, stderr).
func (e *env) stateOutputs(queries [][]string, extra ...string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, q := range queries {
		r := e.runAt(weekNow, append(append([]string{}, q...), extra...)...)
		out[strings.Join(q, " ")] = logNowRE.ReplaceAllString(r.stdout, "log now at revision N") +
			"exit " + strconv.Itoa(r.code) + "\n" + r.stderr
	}
	return out
}

// compact compacts etcd's history up to now, as operations.md says to after an archive
// (so state --revision can no longer read the log as of an archived revision).
func (e *env) compact() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := e.cli.Get(ctx, "x")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		e.t.Fatal(err)
	}
}

// TestStateArchive: the golden week replayed with snapshots on Monday and Tuesday 18:00;
// state --at/--revision and diff (table and json) at moments before the first archive's
// snapshot, between the two and after both, before any archive; then after `log archive
// --before` Tuesday 00:00 and again after Wednesday 00:00 (etcd compacted after each),
// with --archive they print exactly what they printed before (the archives in either
// order); without them a moment before the oldest snapshot kept fails naming --archive,
// while later moments need no archive; a missing earlier or later archive and an archive
// of another log fail clearly.
func TestStateArchive(t *testing.T) {
	e := newEnv(t)
	e.replayWeek([]time.Time{monday18, tuesday18}, nil)
	revOf := func(at string) string {
		var v struct{ Revision int64 }
		if err := json.Unmarshal([]byte(e.ok("state", "--at", at, "-o", "json")), &v); err != nil || v.Revision == 0 {
			t.Fatalf("state --at %s: revision %d, %v", at, v.Revision, err)
		}
		return strconv.FormatInt(v.Revision, 10)
	}
	monRev, tueRev := revOf(mondayAt), revOf(tuesdayAt)
	queries := stateQueries(monRev, tueRev)
	before := e.stateOutputs(queries)
	for q, out := range before {
		if !strings.Contains(out, "exit 0\n") {
			t.Fatalf("before archiving, coilctl %s: %s", q, out)
		}
	}
	if !strings.Contains(before["diff "+mondayAt+" "+tuesdayAt], "+ address") {
		t.Fatalf("diff Monday-Tuesday shows no address assigned:\n%s", before["diff "+mondayAt+" "+tuesdayAt])
	}
	// The live parts of the replay are those of the golden week: the same state on Tuesday.
	want := e.runAt(weekNow, "state", "--at", tuesdayAt).stdout
	if w := weekEnv(t).runAt(weekNow, "state", "--at", tuesdayAt).stdout; sameRevision(want) != sameRevision(w) {
		t.Fatalf("replayed week: state --at %s differs from the golden week's: %s", tuesdayAt, firstDiff(sameRevision(want), sameRevision(w)))
	}

	tmp := t.TempDir()
	a1, a2 := filepath.Join(tmp, "a1.jsonl"), filepath.Join(tmp, "a2.jsonl")
	e.ok("log", "archive", "--before", "2030-01-08T00:00:00Z", "--to", a1, "--yes")
	e.compact()
	e.fails(1, []string{"state", "--at", mondayAt}, "were archived and are needed here", "pass the archive file with --archive FILE")
	e.fails(1, []string{"state", "--revision", monRev}, "were archived and are needed here", "--archive FILE")
	e.fails(1, []string{"diff", mondayAt, thursday}, "state at FROM: ", "were archived", "--archive FILE")
	e.fails(1, []string{"diff", thursday, mondayAt}, "state at TO: ", "were archived", "--archive FILE")
	// Moments after the snapshot kept need no archive.
	after := e.stateOutputs([][]string{{"state", "--at", tuesdayAt}, {"diff", tuesdayAt, thursday}})
	e.sameOutputs("after one archive, no --archive, later moments", after, map[string]string{
		"state --at " + tuesdayAt:            before["state --at "+tuesdayAt],
		"diff " + tuesdayAt + " " + thursday: before["diff "+tuesdayAt+" "+thursday],
	})
	e.sameOutputs("after one archive", e.stateOutputs(queries, "--archive", a1), before)

	e.ok("log", "archive", "--before", "2030-01-09T00:00:00Z", "--to", a2, "--yes")
	e.compact()
	e.fails(1, []string{"state", "--at", tuesdayAt}, "were archived and are needed here", "--archive FILE")
	e.sameOutputs("two archives", e.stateOutputs(queries, "--archive", a1, "--archive", a2), before)
	e.sameOutputs("two archives, reversed", e.stateOutputs(queries, "--archive", a2, "--archive", a1), before)
	// The later archive alone starts at the snapshots the first one kept: enough from
	// Monday 18:00 on.
	later := [][]string{{"state", "--at", tuesdayAt, "-o", "json"}, {"diff", tuesdayAt, thursday}}
	got := e.stateOutputs(later, "--archive", a2)
	e.sameOutputs("the later archive alone, later moments", got, subset(before, got))

	// Missing archives: the earlier one, the later one; a file that is not there.
	e.fails(1, []string{"state", "--at", mondayAt, "--archive", a2}, "events #1-#", "are in none of the archives given", "earlier 'coilctl log archive' run")
	e.fails(1, []string{"diff", mondayAt, tuesdayAt, "--archive", a2}, "are in none of the archives given")
	e.fails(1, []string{"diff", mondayAt, tuesdayAt, "--archive", a1}, "the archives given end at #")
	e.fails(1, []string{"state", "--at", tuesdayAt, "--archive", a1}, "the archives given end at #", "later 'coilctl log archive' run")
	e.fails(1, []string{"state", "--at", mondayAt, "--archive", filepath.Join(tmp, "nope.jsonl")}, "no such file")

	// The archive of another log (another etcd, the same week a second later) does not join.
	o := newEnv(t)
	o.replayWeek([]time.Time{monday18, tuesday18}, func(ev *events.Event) { ev.Time = ev.Time.Add(time.Second) })
	other := filepath.Join(tmp, "other.jsonl")
	o.ok("log", "archive", "--before", "2030-01-09T00:00:00Z", "--to", other, "--yes")
	e.fails(1, []string{"state", "--at", mondayAt, "--archive", other}, "the live log does not continue the archives given", "chain broken at ")
	e.fails(1, []string{"diff", mondayAt, thursday, "--archive", other}, "the live log does not continue the archives given")
}

// subset is the outputs of want for the queries of got.
func subset(want, got map[string]string) map[string]string {
	out := map[string]string{}
	for q := range got {
		out[q] = want[q]
	}
	return out
}
