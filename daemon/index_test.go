package daemon_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/events/eventstest"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/logindex"
)

// attachPairs returns n events (n even) of pod churn on the node: AddressAssigned then
// AddressReleased of container number from, from+1, ...
func attachPairs(from, n int) []*events.Event {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var evs []*events.Event
	for i := range n {
		c := from + i/2
		id := fmt.Sprintf("%064x", c+1)
		addr := netip.AddrFrom4([4]byte{10, 100, 0, byte(1 + c%6)})
		var p events.Payload = &events.AddressAssigned{ContainerID: id, IfName: "eth0", PodNamespace: "churn",
			PodName: fmt.Sprintf("pod-%d", c), Pool: "default", Block: 0, Addrs: []netip.Addr{addr}}
		if i%2 == 1 {
			p = &events.AddressReleased{ContainerID: id, IfName: "eth0", Pool: "default", Block: 0,
				Addrs: []netip.Addr{addr}, Reason: "CNI DEL"}
		}
		evs = append(evs, &events.Event{Time: start.Add(time.Duration(c) * time.Second), Actor: nodeName, Payload: p})
	}
	return evs
}

// TestIndexBuiltByCoild: coild writes the attachment-index entries of its own stream's
// complete chunks after its start-up replay, and again when its stream passes a chunk
// boundary while it runs; coil_index_chunks_written_total counts them.
func TestIndexBuiltByCoild(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys := events.NewKeys("/coil/")
	stream := events.NodeStream(nodeName)
	// 2100 events before coild starts: chunks #1-#1024 and #1025-#2048 are complete.
	var head events.Version
	for c := 0; c < 2100; c += events.MaxBatch - 1 {
		n := min(events.MaxBatch-1, 2100-c)
		ops, next, err := eventstest.SealedPuts(keys, events.AppendRequest{Stream: stream, Expected: head, Events: attachPairs(c/2, n)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Txn(ctx).Then(append(ops, eventstest.PutHead(keys, stream, next))...).Commit(); err != nil {
			t.Fatal(err)
		}
		head = next
	}
	cfg := e.config()
	cfg.MetricsAddr = freeLoopbackAddr(t)
	e.startDaemon(cfg)

	firsts := func() map[uint64]*logindex.Entry {
		got, err := logindex.Load(ctx, e.log, stream, 0)
		if err != nil {
			t.Fatal(err)
		}
		m := map[uint64]*logindex.Entry{}
		for _, en := range got[stream] {
			m[en.First] = en
		}
		return m
	}
	written := func() float64 {
		text, err := scrape(t, "http://"+cfg.MetricsAddr+"/metrics")
		if err != nil {
			return -1
		}
		return sample(text, "coil_index_chunks_written_total")
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return len(firsts()) == 2 && written() == 2 },
		"coild indexed chunks 1 and 2 after its replay")
	got := firsts()
	if got[1] == nil || got[1].Last != 1024 || got[1025] == nil || got[1025].Last != 2048 {
		t.Fatalf("entries %v, want #1-#1024 and #1025-#2048", got)
	}
	if !got[1].MayContain(logindex.PodKey("churn", "pod-7")) || !got[1025].MayContain(logindex.ContainerKey(fmt.Sprintf("%064x", 600+1))) {
		t.Fatal("an entry lacks a key its chunk mentions")
	}

	// Others' appends... here a test's, standing in for coild's own ADDs and DELs: the stream
	// passes #3072 while coild runs.
	v, _, err := e.log.Head(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	for c := 5000; v.Seq < 3072; c += 50 {
		if v, err = e.log.Append(ctx, events.AppendRequest{Stream: stream, Expected: v, Events: attachPairs(c, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return firsts()[2049] != nil && written() == 3 },
		"coild indexed chunk 3 once its stream passed #3072")
}
