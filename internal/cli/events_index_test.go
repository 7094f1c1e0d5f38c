package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/logindex"
)

// TestGoldenWeekEventsIndexed: with the attachment index built (16-event chunks),
// coilctl events --pod and --container (a 12-character prefix, a longer one, a short
// one, upper case), alone and with --type, --since, --until, --node, --stream and each
// other, print exactly what the full read printed, and the golden files; the index is
// used (chunks skipped) for the pod and the long prefix and not for the short one; a
// pod's release in a chunk that does not name the pod is found (the open assignment's
// container is looked up); a chunk missing in the middle and no index at all give the
// same output again.
func TestGoldenWeekEventsIndexed(t *testing.T) {
	e := weekEnv(t)
	long := "f22fecf9c283" // 12 characters of data/db-2's container on n3
	queries := [][]string{
		{"events", "--pod", "shop/web-3"},
		{"events", "--pod", "shop/web-84", "-o", "wide"},
		{"events", "--pod", "data/db-2", "-o", "json"},
		{"events", "--pod", "data/db-2", "-o", "yaml"},
		{"events", "--pod", "data/db-2", "--type", "AddressReleased"},
		{"events", "--pod", "data/db-2", "--since", "2030-01-08T00:00:00Z", "--until", "2030-01-09T12:00:00Z"},
		{"events", "--pod", "data/db-2", "--node", "n3"},
		{"events", "--pod", "data/db-2", "--stream", "node/n1", "-o", "wide"},
		{"events", "--pod", "data/db-2", "--container", long},
		{"events", "--pod", "shop/nope"},
		{"events", "--container", "f22fecf9", "-o", "json"},
		{"events", "--container", "F2"},
		{"events", "--container", long, "-o", "wide"},
		{"events", "--container", strings.ToUpper(long), "--type", "AddressAssigned", "--since", "2d"},
		{"events", "--container", long + "0", "--node", "n3", "--until", "300"},
		{"events", "--container", long, "--stream", "node/", "--pool", "default"},
	}
	// The full read prints the golden files of the week (TestGoldenWeek), and with the
	// index every query prints what the full read printed.
	scan := e.stateOutputs(queries)
	for name, q := range map[string]string{"events-pod": "events --pod shop/web-3", "events-container": "events --container f22fecf9 -o json"} {
		golden, err := os.ReadFile(filepath.Join(logsDir(t), "week", name+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := "$ coilctl "+q+"\n"+scan[q], string(golden)+"exit 0\n"; got != want {
			t.Fatalf("coilctl %s differs from %s: %s", q, name, firstDiff(got, want))
		}
	}
	if n := strings.Count(scan["events --pod data/db-2 -o json"], "\n"); n < 7 {
		t.Fatalf("events --pod data/db-2 printed %d lines, want the pod's several holdings", n)
	}
	e.buildIndex(goldenChunk)
	if e.indexCount() < 18 {
		t.Fatalf("%d index entries, want one per 16 events of each node stream", e.indexCount())
	}
	e.sameOutputs("indexed", e.stateOutputs(queries), scan)

	wantShown := strings.Count(scan["events --pod data/db-2 -o json"], "\n") - 1 // "exit 0"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The index is used (chunks skipped, the events shown the full read's) for a pod and
	// a 12-character prefix, not for a short prefix.
	for _, c := range []struct {
		pod, container string
		shown          int // -1: some
		indexed        bool
	}{
		{"data/db-2", "", wantShown, true},
		{"shop/web-84", "", -1, true},
		{"", long, -1, true},
		{"", "f2", -1, false},
	} {
		n, read, skipped, err := cli.EventsChunks(ctx, e.cli, c.pod, c.container)
		switch {
		case err != nil:
			t.Fatal(err)
		case c.shown >= 0 && n != c.shown, c.shown < 0 && n == 0:
			t.Errorf("--pod %q --container %q: %d events shown, want %d (-1: some)", c.pod, c.container, n, c.shown)
		case c.indexed && (skipped == 0 || read == 0), !c.indexed && read+skipped != 0:
			t.Errorf("--pod %q --container %q: %d chunks read, %d skipped; indexed: %v", c.pod, c.container, read, skipped, c.indexed)
		}
	}

	// Some of the pod's releases are in chunks whose filters do not name the pod (a
	// release names only its container): they were printed above because the
	// assignment was open (the chunk may mention its container).
	keys := e.log.Keys()
	all, err := logindex.Load(ctx, e.log, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	byContainer := 0
	jsonOut, _, _ := strings.Cut(scan["events --pod data/db-2 -o json"], "exit 0\n")
	for _, ev := range parseJSONLines(t, jsonOut) {
		if ev.Type != "AddressReleased" {
			continue
		}
		for _, en := range all[events.Stream(ev.Stream)] {
			if en.First <= ev.Seq && ev.Seq <= en.Last && !en.MayContain(logindex.PodKey("data", "db-2")) {
				byContainer++
			}
		}
	}
	if byContainer == 0 {
		t.Fatal("no release of data/db-2 lies in a chunk that does not name the pod: the test does not cover open assignments")
	}

	// Chunks missing in the middle of every stream are read.
	for _, s := range []string{"n1", "n2", "n3"} {
		if _, err := e.cli.Delete(ctx, keys.Index(events.NodeStream(s), 3*goldenChunk+1)); err != nil {
			t.Fatal(err)
		}
	}
	e.sameOutputs("chunks missing in the middle", e.stateOutputs(queries), scan)
	if _, err := logindex.Delete(ctx, e.log, ""); err != nil {
		t.Fatal(err)
	}
	e.sameOutputs("no index", e.stateOutputs(queries), scan)
}
