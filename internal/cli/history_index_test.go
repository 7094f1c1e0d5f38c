package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/logindex"
)

// goldenChunk is the chunk size of the golden week's index: its node streams hold 112-153
// events, so entries of 16 events make several chunks per stream.
const goldenChunk = 16

// buildIndex builds the index of every node stream of e with chunks of size events.
func (e *env) buildIndex(size int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	heads, _, err := e.log.Streams(ctx, "node/", 0)
	if err != nil {
		e.t.Fatal(err)
	}
	for s := range heads {
		if _, err := logindex.Build(ctx, e.log, s, logindex.BuildOptions{ChunkSize: size}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// indexCount is the number of index entries stored.
func (e *env) indexCount() int64 {
	e.t.Helper()
	r, err := e.cli.Get(context.Background(), e.log.Keys().IndexPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		e.t.Fatal(err)
	}
	return r.Count
}

func (e *env) chunks(pod, container string) (holdings int, read, skipped int64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	holdings, read, skipped, err := cli.HistoryChunks(ctx, e.cli, pod, container)
	if err != nil {
		e.t.Fatal(err)
	}
	return holdings, read, skipped
}

// sameRevision hides the revisions in messages: building the index moves etcd's
// revision, not the log.
func sameRevision(s string) string { return revisionRE.ReplaceAllString(s, "revision N") }

var revisionRE = regexp.MustCompile(`revision [0-9]+`)

// firstDiff names the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d (of %d, want %d): got %q, want %q", i+1, len(g), len(w), gl, wl)
		}
	}
	return "same"
}

// TestGoldenWeekIndexed: with the attachment index built (16-event chunks), history
// --pod and --container print exactly the golden files of the full scan; a container
// prefix of 12 characters or more uses the index and matches the scan; a shorter one
// scans; a false-positive chunk is read and adds nothing; a chunk missing in the middle
// is read.
func TestGoldenWeekIndexed(t *testing.T) {
	e := weekEnv(t)
	long := "f22fecf9c283" // 12 characters of data/db-2's container (history-statefulset-pod)
	scan := map[string]string{}
	queries := [][]string{
		{"history", "--pod", "shop/web-3"}, {"history", "--pod", "shop/web-84"}, {"history", "--pod", "data/db-2", "-o", "yaml"},
		{"history", "--container", "F2"}, {"history", "--container", strings.ToUpper(long), "-o", "json"},
		{"history", "--container", long + "0"}, {"history", "--pod", "shop/nope"},
	}
	for _, q := range queries {
		r := e.runAt(weekNow, q...)
		scan[strings.Join(q, " ")] = r.stdout + r.stderr
	}
	e.buildIndex(goldenChunk)
	if e.indexCount() < 18 {
		t.Fatalf("%d index entries, want one per 16 events of each node stream", e.indexCount())
	}
	dir := filepath.Join(logsDir(t), "week")
	for _, name := range []string{"history-pod", "history-pod-reclaimed", "history-statefulset-pod", "history-container"} {
		want, err := os.ReadFile(filepath.Join(dir, name+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		cmd, _, _ := strings.Cut(strings.TrimPrefix(string(want), "$ coilctl "), "\n")
		r := e.runAt(weekNow, strings.Fields(cmd)...)
		if got := "$ coilctl " + cmd + "\n" + r.stdout; got != string(want) || r.code != 0 {
			t.Errorf("indexed %s: exit %d, output differs from %s:\n%s%s", cmd, r.code, name, got, r.stderr)
		}
	}
	check := func(when string) {
		t.Helper()
		for _, q := range queries {
			r := e.runAt(weekNow, q...)
			if got, want := sameRevision(r.stdout+r.stderr), sameRevision(scan[strings.Join(q, " ")]); got != want {
				t.Errorf("%s: coilctl %s differs from the full scan: %s", when, strings.Join(q, " "), firstDiff(got, want))
			}
		}
	}
	check("indexed")
	if n, read, skipped := e.chunks("shop/web-84", ""); n != 1 || skipped == 0 {
		t.Fatalf("pod shop/web-84: %d holdings, %d chunks read, %d skipped: the index was not used", n, read, skipped)
	}
	if n, _, skipped := e.chunks("", long); n == 0 || skipped == 0 {
		t.Fatalf("container %s: %d holdings, %d chunks skipped", long, n, skipped)
	}
	if _, read, skipped := e.chunks("", "f2"); read != 0 || skipped != 0 {
		t.Fatalf("container f2 (short prefix): %d chunks read, %d skipped, want a scan", read, skipped)
	}

	// A false positive: every entry of node/n2 claims pod shop/nope. Each is read and
	// nothing is found.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys := e.log.Keys()
	n2 := events.NodeStream("n2")
	es, err := logindex.Load(ctx, e.log, n2, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range es[n2] {
		f := logindex.NewEntry(n2, en.First, en.Last, en.Hash, []string{logindex.PodKey("shop", "nope")})
		b, err := f.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Put(ctx, keys.Index(n2, en.First), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	if n, read, _ := e.chunks("shop/nope", ""); n != 0 || read != int64(len(es[n2])) {
		t.Fatalf("pod shop/nope after forging node/n2's entries: %d holdings, %d chunks read, want 0 and %d", n, read, len(es[n2]))
	}
	e.fails(3, []string{"history", "--pod", "shop/nope"}, "no assignment of pod shop/nope")

	// Chunks missing in the middle of every stream are read. (The forged entries, which
	// left out n2's real keys, are rebuilt first.)
	if _, err := logindex.Delete(ctx, e.log, n2); err != nil {
		t.Fatal(err)
	}
	e.buildIndex(goldenChunk)
	for _, s := range []string{"n1", "n2", "n3"} {
		if _, err := e.cli.Delete(ctx, keys.Index(events.NodeStream(s), 3*goldenChunk+1)); err != nil {
			t.Fatal(err)
		}
	}
	check("chunks missing in the middle")
	// And with no index at all.
	if _, err := logindex.Delete(ctx, e.log, ""); err != nil {
		t.Fatal(err)
	}
	check("no index")
}

// TestLogIndex: coilctl log index builds the missing entries of every node stream,
// again changes nothing, --rebuild replaces a stream's (a corrupt one included); history
// --pod reads fewer chunks and prints what the scan printed; import --force drops the
// index; archive deletes the entries of the chunks it archived.
func TestLogIndex(t *testing.T) {
	e := newEnv(t)
	fillNodeStreams(t, e.cli, 2, 5000) // node-000 and node-001, 2500 events each: 2 chunks
	q := []string{"history", "--pod", "bench/pod-1-600", "-o", "json"}
	scan := e.ok(q...)

	var sum struct {
		Deleted, Written, Present int
		Streams                   []logindex.BuildResult
	}
	if err := json.Unmarshal([]byte(e.ok("log", "index", "-o", "json")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Written != 4 || sum.Present != 0 || len(sum.Streams) != 2 || sum.Streams[1].Chunks != 2 || sum.Streams[1].Head != 2500 {
		t.Fatalf("log index: %+v", sum)
	}
	if out := e.ok("log", "index"); !strings.Contains(out, "0 entries written, 4 present, 2 node streams") {
		t.Fatalf("log index again:\n%s", out)
	}
	if got := e.ok(q...); got != scan {
		t.Fatalf("indexed history differs:\n%s\nwant\n%s", got, scan)
	}
	if n, read, skipped := e.chunks("bench/pod-1-600", ""); n != 1 || read != 1 || skipped != 3 {
		t.Fatalf("pod-1-600: %d holdings, %d chunks read, %d skipped; want 1, 1, 3", n, read, skipped)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys := e.log.Keys()
	n1 := events.NodeStream("node-001")
	if _, err := e.cli.Put(ctx, keys.Index(n1, 1025), "garbage"); err != nil {
		t.Fatal(err)
	}
	if got := e.ok(q...); got != scan { // an entry that does not decode is ignored
		t.Fatalf("history with a corrupt entry differs:\n%s", got)
	}
	out := e.ok("log", "index", "--stream", "node/node-001", "--rebuild")
	if !strings.Contains(out, "2 entries written, 0 present, 1 node streams (2 deleted first)") {
		t.Fatalf("log index --rebuild:\n%s", out)
	}
	if n, read, _ := e.chunks("bench/pod-1-600", ""); n != 1 || read != 1 {
		t.Fatalf("after the rebuild: %d holdings, %d chunks read", n, read)
	}
	e.fails(2, []string{"log", "index", "--stream", "cluster"}, "only node streams")
	e.fails(3, []string{"log", "index", "--stream", "node/nope"}, "has no events")

	// Archive: a snapshot at the end of each stream, everything before it archived.
	dir := t.TempDir()
	e.ok("log", "snapshot")
	e.ok("log", "archive", "--before", "2100-01-01T00:00:00Z", "--to", filepath.Join(dir, "archive.jsonl"), "--yes")
	if n := e.indexCount(); n != 0 {
		t.Fatalf("%d index entries left after archiving every chunk", n)
	}
	if err := json.Unmarshal([]byte(e.ok("log", "index", "-o", "json")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Written != 0 || sum.Streams[0].Archived != 2 {
		t.Fatalf("log index after the archive: %+v", sum)
	}
	// History of an archived stream fails as the full scan does (the archive holds the
	// early events), whatever entries of archived chunks remain.
	e.fails(1, q, "events before #2501 were archived")
	stale := logindex.NewEntry(n1, 1, 1024, events.Hash{}, []string{logindex.PodKey("bench", "pod-1-600")})
	sb, err := stale.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Put(ctx, keys.Index(n1, 1), string(sb)); err != nil {
		t.Fatal(err)
	}
	e.fails(1, q, "events before #2501 were archived") // (either stream may be named first)

	// Import --force drops the index (stale entries describe the log replaced).
	exp := filepath.Join(dir, "export.jsonl")
	e.ok("log", "export", exp)
	if _, err := e.cli.Put(ctx, keys.Index(n1, 1), "stale"); err != nil {
		t.Fatal(err)
	}
	e.ok("log", "import", "--force", "--yes", exp)
	if n := e.indexCount(); n != 0 {
		t.Fatalf("%d index entries left after import --force", n)
	}
}
