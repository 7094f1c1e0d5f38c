package readside_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/readside"
)

// TestReplay: Replay of every stream equals folding them one event after another; from
// a stream's newest snapshot it is the same state; streams not asked for are left out.
func TestReplay(t *testing.T) {
	log := memLog(t)
	w := smallLog(t, log)
	want := hashOf(t, fold(t, log, nil))
	ctx := t.Context()
	heads, rev, err := log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	streams := readside.StreamsOf(heads, nil)
	if !slices.IsSorted(streams) || len(streams) != 4 {
		t.Fatalf("StreamsOf: %v", streams)
	}
	st, err := readside.Replay(ctx, log, streams, rev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := hashOf(t, st); got != want {
		t.Fatalf("replay hash %s, sequential fold %s", got, want)
	}

	w.snapshot(events.NodeStream("n1"), at(6))
	w.snapshot(events.PoolStream("p"), at(6))
	want = hashOf(t, fold(t, log, nil))
	heads, rev, err = log.Streams(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var started []uint64
	st, err = readside.Replay(ctx, log, readside.StreamsOf(heads, nil), rev, func(ctx context.Context, s events.Stream) (uint64, error) {
		from, serr := events.StartSeq(ctx, log, s, rev)
		started = append(started, from)
		return from, serr
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := hashOf(t, st); got != want {
		t.Fatalf("replay from snapshots: hash %s, want %s", got, want)
	}
	if slices.Max(started) < 2 {
		t.Fatalf("no stream started at its snapshot: %v", started)
	}

	nodes := readside.StreamsOf(heads, func(s events.Stream) bool { kind, _ := s.Kind(); return kind == "node" })
	st, err = readside.Replay(ctx, log, nodes, rev, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 2 || len(st.Pools) != 0 || len(st.Cluster.Pools) != 0 {
		t.Fatalf("replay of the node streams only: %d nodes, %d pools, %d pool definitions", len(st.Nodes), len(st.Pools), len(st.Cluster.Pools))
	}
}

// TestReplayErrors: a corrupt event or a failing start fails the replay, naming the
// stream, and the error keeps its kind.
func TestReplayErrors(t *testing.T) {
	log := memLog(t)
	smallLog(t, log)
	ctx := t.Context()
	streams := []events.Stream{events.ClusterStream, events.PoolStream("p"), events.NodeStream("n1"), events.NodeStream("n2")}
	boom := errors.New("boom")
	_, err := readside.Replay(ctx, log, streams, 0, func(_ context.Context, s events.Stream) (uint64, error) {
		if s == events.NodeStream("n2") {
			return 0, boom
		}
		return 1, nil
	})
	if !errors.Is(err, boom) || !contains(err, "replay node/n2") {
		t.Fatalf("failing start: %v", err)
	}
	log.Corrupt(events.NodeStream("n1"), 2, []byte("garbage"))
	_, err = readside.Replay(ctx, log, streams, 0, nil)
	if !errors.Is(err, events.ErrCorrupt) || !contains(err, "replay node/n1") {
		t.Fatalf("corrupt event: %v", err)
	}
	_, err = readside.Load(ctx, log)
	if !errors.Is(err, events.ErrCorrupt) {
		t.Fatalf("Load of a corrupt log: %v", err)
	}
}

// TestLoad: the current state of every stream at one revision, from the newest
// snapshots; the nodes it knows and the addresses in use per block.
func TestLoad(t *testing.T) {
	log := memLog(t)
	w := smallLog(t, log)
	w.snapshot(events.NodeStream("n1"), at(6))
	w.add(events.PoolStream("p"), at(7), &events.BlockAssigned{Index: 2, Node: "n3"})
	st, err := readside.Load(t.Context(), log)
	if err != nil {
		t.Fatal(err)
	}
	_, rev, err := log.Streams(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rev != rev {
		t.Fatalf("Rev %d, want %d", st.Rev, rev)
	}
	if got, want := hashOf(t, st.State), hashOf(t, fold(t, log, nil)); got != want {
		t.Fatalf("Load hash %s, want %s", got, want)
	}
	if got := st.NodeNames(); !slices.Equal(got, []string{"n1", "n2", "n3"}) {
		t.Fatalf("NodeNames %v", got)
	}
	if !st.KnowsNode("n3") || !st.KnowsNode("n2") || st.KnowsNode("n4") {
		t.Fatal("KnowsNode: n3 (owns a block) and n2 (has a stream) known, n4 not")
	}
	use := st.AddressesInUse("p")
	if len(use) != 2 || use[0] != 1 || use[1] != 1 {
		t.Fatalf("AddressesInUse %v, want one address in blocks 0 and 1", use)
	}
	if len(st.AddressesInUse("other")) != 0 {
		t.Fatal("addresses in use in a pool that does not exist")
	}
}

func contains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}
