package allocator_test

import (
	"context"
	"strings"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/etcdtest"
)

// TestStreamRewrittenUnderNode: the log is replaced under a running node allocator (as
// `coilctl log import --force` does). The allocator notices (its head went backwards,
// the stream is gone, or the events no longer continue its hash chain), fails requests
// with ErrRewritten (try again) instead of "moved on" forever, signals Stale, and works
// again once it reloaded the log.
func TestStreamRewrittenUnderNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before runs before the log is saved, after between saving and rewriting.
		saveBeforeNode bool
		diverge        bool
	}{
		{name: "head went back"},
		{name: "stream gone", saveBeforeNode: true},
		{name: "chain does not continue", diverge: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := etcdtest.Start(t)
			cli := c.Client(t)
			admin := &allocator.Admin{Log: events.NewEtcdLog(cli, events.EtcdConfig{Prefix: "/coil/"}), Clock: events.SystemClock{}, Actor: "test"}
			if err := admin.CreatePool(ctx, pool(t, "p", 2, "10.0.0.0/26")); err != nil {
				t.Fatal(err)
			}
			var saved *allocatortest.SavedLog
			if tc.saveBeforeNode {
				saved = allocatortest.SaveLog(t, cli, "/coil/")
			}
			log := coilLog(t, cli)
			an := allocatortest.Start(t, cli, log, "n1", allocatortest.Options{Prefix: "/coil/"})
			n := an.Node
			if !tc.saveBeforeNode {
				saved = allocatortest.SaveLog(t, cli, "/coil/")
			}
			alloc(t, n, "c1", "p")
			alloc(t, n, "c2", "p")
			saved.RewriteLog(t, cli)
			if tc.diverge {
				// Another writer with the node's lease writes a different history on top
				// of the saved one, longer than what n has.
				other := allocator.NewNode(allocator.NodeConfig{Node: "n1", Log: log, AliveKey: events.AliveKey("/coil/", "n1"), Lease: int64(an.Lease)})
				if _, _, err := other.Load(ctx); err != nil {
					t.Fatal(err)
				}
				if err := other.Register(ctx); err != nil {
					t.Fatal(err)
				}
				octx, cancel := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() { other.Run(octx); close(done) }()
				for _, id := range []string{"x1", "x2", "x3"} {
					alloc(t, other, id, "p")
				}
				cancel()
				<-done
			}

			_, err := n.Allocate(ctx, allocator.Request{ContainerID: "c3", IfName: "eth0", Pool: "p"})
			if !errors.Is(err, events.ErrRewritten) || !strings.Contains(err.Error(), "rewritten") {
				t.Fatalf("Allocate after the rewrite = %v, want ErrRewritten", err)
			}
			select {
			case <-n.Stale():
			default:
				t.Fatal("Stale not signalled")
			}
			// Until reloaded, requests fail at once with the same error.
			if _, err := n.Release(ctx, "c1", "eth0", "test"); !errors.Is(err, events.ErrRewritten) {
				t.Fatalf("Release while stale = %v, want ErrRewritten", err)
			}
			if _, _, err := n.Load(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-n.Stale():
				t.Fatal("Stale still signalled after Load")
			default:
			}
			a := alloc(t, n, "c3", "p")
			if a == nil {
				t.Fatal("no assignment after reload")
			}
			checkInvariants(t, log, nil)
		})
	}
}
