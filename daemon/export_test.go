package daemon_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/internal/testutil"
)

// syncCounter is a slog handler that counts export syncs by trigger (every sync, and
// every route an ADD adds, is logged, at Debug when it changed nothing) and passes
// records at its level on.
type syncCounter struct {
	next  slog.Handler
	count *sync.Map // trigger -> *atomic.Int64
}

func (h syncCounter) Enabled(context.Context, slog.Level) bool { return true }

func (h syncCounter) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case "export table sync", "export table synced", "export table sync was slow":
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "trigger" {
				n, _ := h.count.LoadOrStore(a.Value.String(), new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
			return true
		})
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h syncCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return syncCounter{next: h.next.WithAttrs(as), count: h.count}
}

func (h syncCounter) WithGroup(name string) slog.Handler {
	return syncCounter{next: h.next.WithGroup(name), count: h.count}
}

func (h syncCounter) get(trigger string) int64 {
	if n, ok := h.count.Load(trigger); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// TestBurstSyncsExportOncePerBlock: concurrent ADDs that land in new blocks each need
// their block's route before they return, but they queue for the same work: the ADD
// path exports (adds a block route) at most once per new block, not once per ADD, and
// the session loop does not run a sync per watched batch of address events.
func TestBurstSyncsExportOncePerBlock(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	cfg := e.config()
	cfg.ReconcileEvery = time.Hour // only the startup pass: its sync is not counted below
	counter := syncCounter{next: cfg.Logger.Handler(), count: &sync.Map{}}
	cfg.Logger = slog.New(counter)
	e.startDaemon(cfg)
	client := cniproto.NewClient(e.sock, 30*time.Second)

	const pods = 24 // three blocks of 8
	paths := make([]string, pods)
	for i := range paths {
		_, paths[i] = e.pod(fmt.Sprintf("b%d", i))
	}
	errs := make([]error, pods)
	testutil.Burst(pods, func(i int) {
		_, errs[i] = client.Add(context.Background(), &cniproto.Request{
			ContainerID: fmt.Sprintf("burst%03d", i), IfName: "eth0", NetNS: paths[i], PodNamespace: "default", PodName: "p"})
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
	}
	blocks := e.nodeBlocks("default")
	if got, want := table(t, e.nodeNS, 119), blockRoutes(pool4, pool6, bits, blocks); join(got) != join(want) {
		t.Fatalf("export table after the burst:\n got %s\nwant %s", join(got), join(want))
	}
	// At most one ADD-triggered sync per new block. The session loop's watch may export
	// the new blocks first, and then every ADD finds its route present and syncs
	// nothing: so the lower bound is on the syncs of both triggers (the counter saw the
	// burst's exports), not on the ADD path's alone.
	add, watch := counter.get("add"), counter.get("watch")
	if add > int64(len(blocks)) {
		t.Fatalf("%d ADD-triggered export syncs for %d ADDs into %d new blocks; want at most %d", add, pods, len(blocks), len(blocks))
	}
	if add+watch == 0 {
		t.Fatalf("no export sync counted for %d ADDs into %d new blocks (neither ADD- nor watch-triggered)", pods, len(blocks))
	}
	t.Logf("%d ADDs, %d blocks, %d ADD-triggered syncs, %d from the session loop", pods, len(blocks), add, watch)
}
