package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/internal/testutil"
)

// gatedBuffer collects output; while closed, writes block (a slow terminal or pipe).
type gatedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
}

func newGatedBuffer(open bool) *gatedBuffer {
	g := &gatedBuffer{gate: make(chan struct{}), entered: make(chan struct{})}
	if open {
		close(g.gate)
	}
	return g
}

func (g *gatedBuffer) Write(p []byte) (int, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.Write(p)
}

func (g *gatedBuffer) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.String()
}

// follow runs `coilctl events -f -o json` in the background; stop cancels it and returns
// its exit code and stderr.
func (e *env) follow(out *gatedBuffer, args ...string) (stop func() (int, string)) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var errb bytes.Buffer
	done := make(chan int, 1)
	all := append([]string{"--etcd-endpoints", strings.Join(e.etcd.Endpoints(), ","), "--timeout", "20s",
		"events", "-f", "-o", "json"}, args...)
	go func() {
		done <- cli.Main(ctx, all, cli.Env{Stdout: out, Stderr: &errb, Clock: fixedClock{t0}, Getenv: func(string) string { return "tester" }})
	}()
	stopped := false
	var code int
	stop = func() (int, string) {
		if !stopped {
			stopped = true
			cancel()
			code = <-done
		}
		return code, errb.String()
	}
	e.t.Cleanup(func() { stop() })
	return stop
}

// logKeys lists every event of the log as "stream#seq", in revision order.
func (e *env) logKeys() []string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var evs []*events.Event
	if _, err := e.log.ReadPrefix(ctx, "", 0, func(ev *events.Event) error { evs = append(evs, ev); return nil }); err != nil {
		e.t.Fatal(err)
	}
	return keysOf(sortByRevision(evs))
}

func sortByRevision(evs []*events.Event) []*events.Event {
	out := append([]*events.Event(nil), evs...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && (out[j].Revision < out[j-1].Revision ||
			(out[j].Revision == out[j-1].Revision && out[j].Stream < out[j-1].Stream)); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func keysOf(evs []*events.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%s#%d", ev.Stream, ev.Seq)
	}
	return out
}

func printedKeys(t *testing.T, out string) []string {
	t.Helper()
	var keys []string
	for _, ev := range parseJSONLines(t, out) {
		keys = append(keys, fmt.Sprintf("%s#%d", ev.Stream, ev.Seq))
	}
	return keys
}

// waitPrinted waits until the follower printed exactly the log's events, in order.
func (e *env) waitPrinted(out *gatedBuffer, what string) {
	e.t.Helper()
	var want []string
	testutil.Eventually(e.t, 30*time.Second, func() bool {
		want = e.logKeys()
		return len(printedKeys(e.t, out.String())) >= len(want)
	}, what+": the follower prints every event")
	if got := printedKeys(e.t, out.String()); strings.Join(got, " ") != strings.Join(want, " ") {
		e.t.Fatalf("%s: printed\n%v\nwant (the log in revision order, each once)\n%v", what, got, want)
	}
}

func (e *env) createPools(from, n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := &allocator.Admin{Log: e.log, Clock: fixedClock{t0}, Actor: "coilctl:tester"}
	for i := from; i < from+n; i++ {
		sn, err := allocator.ParseSubnet(fmt.Sprintf("10.%d.0.0/24", 100+i))
		if err != nil {
			e.t.Fatal(err)
		}
		if err := admin.CreatePool(ctx, &events.PoolCreated{Name: fmt.Sprintf("p%d", i), BlockSizeBits: 4, Subnets: []events.Subnet{sn}}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// TestEventsFollowCompaction: events committed and compacted away between the follower's
// read and its watch are printed once, in order (the watch re-reads the streams).
func TestEventsFollowCompaction(t *testing.T) {
	e := cluster2(t)
	out := newGatedBuffer(false)
	stop := e.follow(out)
	<-out.entered // it read the log and is printing the history: the output blocks
	e.createPools(0, 5)
	n3, _ := e.startNode("n3")
	e.alloc(n3, "c9", "p0", "late-1")
	e.compact()
	close(out.gate)
	e.waitPrinted(out, "after compaction")
	e.createPools(5, 3)
	e.waitPrinted(out, "after compaction, new events")
	if code, stderr := stop(); code != 0 || stderr != "" {
		t.Fatalf("follow ended with exit %d, stderr %q", code, stderr)
	}
}

// TestEventsFollowEtcdRestart: the follower keeps going across an etcd restart.
func TestEventsFollowEtcdRestart(t *testing.T) {
	e := cluster2(t)
	out := newGatedBuffer(true)
	stop := e.follow(out, "--stream", "cluster")
	e.createPools(0, 2)
	waitCluster := func(what string) {
		t.Helper()
		var want []string
		testutil.Eventually(t, 30*time.Second, func() bool {
			want = want[:0]
			for _, k := range e.logKeys() {
				if strings.HasPrefix(k, "cluster#") {
					want = append(want, k)
				}
			}
			return len(printedKeys(t, out.String())) >= len(want)
		}, what+": the follower prints every cluster event")
		if got := printedKeys(t, out.String()); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: printed %v, want %v", what, got, want)
		}
	}
	waitCluster("before the restart")
	e.etcd.Restart()
	e.createPools(2, 3)
	waitCluster("after the restart")
	if code, stderr := stop(); code != 0 || stderr != "" {
		t.Fatalf("follow ended with exit %d, stderr %q", code, stderr)
	}
}

func TestEventsFollowUsage(t *testing.T) {
	e := newEnv(t)
	e.fails(2, []string{"events", "-f", "--until", "5"}, "--until and --follow do not go together")
	e.fails(2, []string{"events", "--since", "yesterday"}, `--since "yesterday": want an RFC 3339 time`)
	e.fails(2, []string{"events", "--since", "-2h"}, "without a sign")
	e.fails(2, []string{"events", "--until", "0"}, "a revision is a positive integer")
	e.fails(2, []string{"events", "--pod", "nopod"}, `--pod "nopod": want NAMESPACE/NAME`)
	e.fails(2, []string{"events", "--node", "Bad_Name"}, "--node")
	e.fails(2, []string{"events", "-o", "xml"}, `--output "xml"`)
	e.fails(2, []string{"pool", "list", "-o", "wide"}, `--output "wide"`)
}
