package cli_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/logindex"
)

// TestEventsFollowIndexed: coilctl events -f --pod over the golden week prints the same
// history and then the same new events with the attachment index as without it (two
// followers at once, one started with the index, one without): the release of the pod's
// assignment still open when the history was read is followed (the filter's state after
// the indexed read is the full read's), another pod's event is not, and the whole output
// is what a full read prints afterwards. A follower started on a forged index entry (a
// chunk that names the pod, claiming not to) misses the pod's event in that chunk: the
// follow path reads through the index.
func TestEventsFollowIndexed(t *testing.T) {
	e := weekEnv(t)
	e.buildIndex(goldenChunk)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"--pod", "data/db-2"}
	query := append([]string{"events", "-o", "json"}, args...)
	history := e.runAt(weekNow, query...)
	if history.code != 0 {
		t.Fatalf("coilctl %v: exit %d: %s", query, history.code, history.stderr)
	}
	n0 := len(parseJSONLines(t, history.stdout))
	if n0 < 7 {
		t.Fatalf("events --pod data/db-2 printed %d events, want the pod's several holdings", n0)
	}
	waitLines := func(out *gatedBuffer, n int, what string) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() bool { return len(parseJSONLines(t, out.String())) >= n },
			fmt.Sprintf("%s prints %d events", what, n))
	}

	withIndex := newGatedBuffer(true)
	stopWith := e.follow(withIndex, args...)
	waitLines(withIndex, n0, "the follower with the index")
	keys := e.log.Keys()
	if _, err := logindex.Delete(ctx, e.log, ""); err != nil {
		t.Fatal(err)
	}
	if e.indexCount() != 0 {
		t.Fatal("the index is still there")
	}
	without := newGatedBuffer(true)
	stopWithout := e.follow(without, args...)
	waitLines(without, n0, "the follower without the index")

	// The pod's assignment still open, and its stream.
	open := e.openAssignment("data", "db-2")
	if open == nil {
		t.Fatal("data/db-2 holds no address at the end of the week")
	}
	as := open.Payload.(*events.AddressAssigned)
	other := *as
	other.ContainerID, other.PodNamespace, other.PodName = strings.Repeat("ab", 32), "shop", "web-1000"
	again := *as
	again.ContainerID = strings.Repeat("cd", 32)
	added := e.appendEvents(ctx, open.Stream,
		&events.AddressReleased{ContainerID: as.ContainerID, IfName: as.IfName, Pool: as.Pool, Block: as.Block, Addrs: as.Addrs, Reason: "deleted"},
		&other, // another pod: not shown
		&again)
	waitLines(withIndex, n0+2, "the follower with the index")
	waitLines(without, n0+2, "the follower without the index")
	for what, stop := range map[string]func() (int, string){"with the index": stopWith, "without": stopWithout} {
		if code, stderr := stop(); code != 0 || stderr != "" {
			t.Fatalf("follower %s ended with exit %d, stderr %q", what, code, stderr)
		}
	}
	if got, want := withIndex.String(), without.String(); got != want {
		t.Fatalf("followed with the index and without differ: %s\n--- with\n%s--- without\n%s", firstDiff(got, want), got, want)
	}
	full := e.runAt(weekNow, query...) // no index: a full read
	if got := withIndex.String(); got != full.stdout {
		t.Fatalf("followed output differs from the full read after it: %s", firstDiff(got, full.stdout))
	}
	printed := printedKeys(t, withIndex.String())
	for i, k := range []string{added[0], added[2]} {
		if printed[n0+i] != k {
			t.Fatalf("followed event %d: %s, want %s (printed %v)", i, printed[n0+i], k, printed[n0:])
		}
	}

	// A forged entry hiding a chunk that mentions the pod: a follower started on it does
	// not print the pod's event there.
	e.buildIndex(goldenChunk)
	all, err := logindex.Load(ctx, e.log, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var hidden string
	for _, ev := range parseJSONLines(t, history.stdout) {
		for _, en := range all[events.Stream(ev.Stream)] {
			if hidden == "" && ev.Type == "AddressAssigned" && en.First <= ev.Seq && ev.Seq <= en.Last {
				hidden = fmt.Sprintf("%s#%d", ev.Stream, ev.Seq)
				forged, err := logindex.NewEntry(en.Stream, en.First, en.Last, en.Hash, nil).Encode()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.cli.Put(ctx, keys.Index(en.Stream, en.First), string(forged)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if hidden == "" {
		t.Fatal("no assignment of data/db-2 lies in an indexed chunk")
	}
	forged := newGatedBuffer(true)
	stopForged := e.follow(forged, args...)
	waitLines(forged, 1, "the follower on the forged index")
	marker := *as
	marker.ContainerID = strings.Repeat("ef", 32)
	markerKey := e.appendEvents(ctx, open.Stream, &marker)[0]
	testutil.Eventually(t, 30*time.Second, func() bool { return strings.Contains(forged.String(), marker.ContainerID) },
		"the follower on the forged index prints the new assignment")
	if code, stderr := stopForged(); code != 0 || stderr != "" {
		t.Fatalf("follower on the forged index ended with exit %d, stderr %q", code, stderr)
	}
	got := strings.Join(printedKeys(t, forged.String()), " ")
	if strings.Contains(" "+got+" ", " "+hidden+" ") || !strings.Contains(got, markerKey) {
		t.Fatalf("follower on the forged index printed %s: want %s (in the hidden chunk) missing, %s there", got, hidden, markerKey)
	}
}

// openAssignment returns the last AddressAssigned of pod ns/name in the node streams that
// no release followed (nil: none).
func (e *env) openAssignment(ns, name string) *events.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	open := map[[3]string]*events.Event{} // by node stream, container and interface
	if _, err := e.log.ReadPrefix(ctx, "node/", 0, func(ev *events.Event) error {
		switch p := ev.Payload.(type) {
		case *events.AddressAssigned:
			if p.PodNamespace == ns && p.PodName == name {
				open[[3]string{string(ev.Stream), p.ContainerID, p.IfName}] = ev
			}
		case *events.AddressReleased:
			delete(open, [3]string{string(ev.Stream), p.ContainerID, p.IfName})
		}
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	var last *events.Event
	for _, ev := range open {
		if last == nil || ev.Revision > last.Revision {
			last = ev
		}
	}
	return last
}

// appendEvents appends one event per payload to stream s, each its own append, and
// returns their "stream#seq".
func (e *env) appendEvents(ctx context.Context, s events.Stream, payloads ...events.Payload) []string {
	e.t.Helper()
	var added []string
	for _, p := range payloads {
		head, _, err := e.log.Head(ctx, s)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.log.Append(ctx, events.AppendRequest{Stream: s, Expected: head,
			Events: []*events.Event{{Time: weekNow, Actor: "tester", Payload: p}}}); err != nil {
			e.t.Fatalf("append %s to %s: %v", p.EventType(), s, err)
		}
		added = append(added, fmt.Sprintf("%s#%d", s, head.Seq+1))
	}
	return added
}
