package readside_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/logindex"
	"github.com/coil-net/coil/readside"
)

// shown runs f over the events of log as ReadEvents returns them and names those shown
// ("stream#seq").
func shown(t *testing.T, log events.Log, ix *readside.Index, f *readside.EventFilter) []string {
	t.Helper()
	heads, rev, err := log.Streams(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := readside.ReadEvents(t.Context(), log, ix, f, heads, rev)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(evs, func(a, b *events.Event) int { return int(a.Revision - b.Revision) }) {
		t.Fatal("events not in revision order")
	}
	out := []string{}
	for _, e := range evs {
		if f.Show(e) {
			out = append(out, fmt.Sprintf("%s#%d", e.Stream, e.Seq))
		}
	}
	return out
}

// TestEventFilter: each field of the filter alone and combined, on smallLog.
func TestEventFilter(t *testing.T) {
	log := memLog(t)
	smallLog(t, log)
	cases := []struct {
		name string
		f    readside.EventFilter
		want []string
	}{
		{"stream", readside.EventFilter{Stream: "node/n2"}, []string{"node/n2#1", "node/n2#2", "node/n2#3"}},
		{"stream prefix", readside.EventFilter{Stream: "pool/"}, []string{"pool/p#1", "pool/p#2", "pool/p#3", "pool/p#4"}},
		{"type", readside.EventFilter{Types: []events.Type{events.TypeBlockReleased, events.TypePoolCreated}}, []string{"cluster#1", "pool/p#3"}},
		{"node", readside.EventFilter{Node: "n2"}, []string{"pool/p#2", "node/n2#1", "node/n2#2", "node/n2#3", "pool/p#3"}},
		{"pool", readside.EventFilter{Pool: "p", Stream: "node/n1"}, []string{"node/n1#2", "node/n1#3", "node/n1#4", "node/n1#5"}},
		{"container", readside.EventFilter{Container: "c1"}, []string{"node/n1#2", "node/n1#3"}},
		{"pod", readside.EventFilter{PodNamespace: "shop", PodName: "web-0"}, []string{"node/n1#2", "node/n1#3", "node/n1#5"}},
		{"since until", readside.EventFilter{Since: &readside.Point{Time: at(3)}, Until: &readside.Point{Time: at(4)}, Stream: "node/"},
			[]string{"node/n1#3", "node/n1#4", "node/n2#3"}},
		{"nothing", readside.EventFilter{Node: "n9"}, []string{}},
	}
	for _, c := range cases {
		if got := shown(t, log, nil, &c.f); !slices.Equal(got, c.want) {
			t.Errorf("%s: shown %v, want %v", c.name, got, c.want)
		}
	}
	f := readside.EventFilter{Node: "n1"}
	if f.Reads(events.NodeStream("n2")) || !f.Reads(events.PoolStream("p")) || f.Reads(events.ClusterStream) {
		t.Fatal("Reads of --node n1: its stream and pool streams only")
	}
}

// TestEventFilterClaims: --pod and --container show a fixed-address claim (in the pool
// stream) and its end, next to the pod's assignment and release in the node stream;
// other pods' claims are not shown, and block streams are not read for them.
func TestEventFilterClaims(t *testing.T) {
	log := memLog(t)
	w := smallLog(t, log)
	p, n2 := events.PoolStream("p"), events.NodeStream("n2")
	claim := func(id, ns, name, a string) (*events.AddressClaimed, *events.AddressAssigned) {
		asg := assigned(id, ns, name, "p", 2, a)
		return &events.AddressClaimed{Addrs: asg.Addrs, Block: 2, Node: "n2", ContainerID: id, IfName: "eth0", PodNamespace: ns, PodName: name}, asg
	}
	c5, a5 := claim("c5eeeeeeeeeeeeeeee", "data", "db-1", "10.0.0.9")
	c6, a6 := claim("c6ffffffffffffffff", "data", "db-2", "10.0.0.10")
	w.add(p, at(8), c5, c6)                                                                                                                              // pool/p#5, #6
	w.add(n2, at(8), a5, a6)                                                                                                                             // node/n2#4, #5
	w.add(p, at(9), &events.AddressClaimReleased{Addrs: c5.Addrs, Block: 2, Node: "n2", ContainerID: c5.ContainerID, IfName: "eth0", Reason: "CNI DEL"}) // pool/p#7
	w.add(n2, at(9), released(a5, "CNI DEL"))                                                                                                            // node/n2#6
	for _, c := range []struct {
		name string
		f    readside.EventFilter
		want []string
	}{
		{"pod", readside.EventFilter{PodNamespace: "data", PodName: "db-1"}, []string{"pool/p#5", "node/n2#4", "pool/p#7", "node/n2#6"}},
		{"container", readside.EventFilter{Container: "c6"}, []string{"pool/p#6", "node/n2#5"}},
		{"pod and type", readside.EventFilter{PodNamespace: "data", PodName: "db-1", Types: []events.Type{events.TypeAddressClaimReleased}},
			[]string{"pool/p#7"}},
	} {
		if got := shown(t, log, nil, &c.f); !slices.Equal(got, c.want) {
			t.Errorf("%s: shown %v, want %v", c.name, got, c.want)
		}
	}
	f := readside.EventFilter{PodNamespace: "data", PodName: "db-1"}
	if !f.Reads(events.PoolStream("p")) || f.Reads(events.BlockStream("p", 2)) || f.Reads(events.ClusterStream) {
		t.Fatal("Reads of --pod: node and pool streams, not block streams or the cluster")
	}
}

// TestReadEventsIndexed: a pod's or a long container prefix's events read through the
// attachment index are those of the full read, with chunks skipped.
func TestReadEventsIndexed(t *testing.T) {
	lg, _ := etcdLog(t)
	churnLog(t, lg, 120)
	for _, s := range []events.Stream{events.NodeStream("n1"), events.NodeStream("n2")} {
		if _, err := logindex.Build(t.Context(), lg, s, logindex.BuildOptions{ChunkSize: 8}); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []readside.EventFilter{
		{PodNamespace: "shop", PodName: "db-0"}, {PodNamespace: "shop", PodName: "web-9"}, {Container: cid(77)[:14]},
		{PodNamespace: "shop", PodName: "web-9", Types: []events.Type{events.TypeAddressReleased}},
	} {
		full := f
		want := shown(t, lg, nil, &full)
		ix := &readside.Index{Store: lg, Timeout: time.Minute}
		indexed := f
		got := shown(t, lg, ix, &indexed)
		if !slices.Equal(got, want) || len(want) == 0 {
			t.Fatalf("%+v: indexed %v, full %v", f, got, want)
		}
		if _, skipped := ix.Chunks(); skipped == 0 {
			t.Fatalf("%+v: no chunk skipped", f)
		}
	}
}
