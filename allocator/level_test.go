package allocator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/allocator"
	"github.com/coil-net/coil/allocator/allocatortest"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/projection"
)

// RequireLevel, the gate for features whose events older coilds cannot read: refused,
// naming the feature and the coilds that hold it back, while a coild of a release before
// the level is live; the level is raised by the first use once none is.
func TestRequireLevel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli, log, admin := startEtcdAdmin(t)

	if err := admin.RequireLevel(ctx, events.LevelBase, "pools"); err != nil {
		t.Fatalf("level 0: %v", err)
	}
	old := allocatortest.Start(t, cli, log, "n-old", allocatortest.Options{Prefix: "/coil/", AliveValue: "n-old"})
	t.Cleanup(old.Kill)
	allocatortest.Start(t, cli, log, "n-new", allocatortest.Options{Prefix: "/coil/"})

	err := admin.RequireLevel(ctx, events.Level1, "pool reservations")
	if !errors.Is(err, allocator.ErrLevel) {
		t.Fatalf("with an old coild live: %v", err)
	}
	for _, want := range []string{"pool reservations needs cluster feature level 1", "n-old (level 0: a release before feature levels)", "Upgrading"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "n-new") {
		t.Errorf("error %q names a coild that reads the level", err)
	}
	if err = admin.RequireLevel(ctx, events.CurrentLevel+1, "the future"); !errors.Is(err, allocator.ErrLevel) || !strings.Contains(err.Error(), "upgrade coilctl") {
		t.Fatalf("beyond this build: %v", err)
	}
	cl, err := admin.Cluster(ctx)
	if err != nil || cl.Level != 0 {
		t.Fatalf("refusals raised the level: %d %v", cl.Level, err)
	}
	if err = allocator.CheckLevel(cl, events.Level1, "block streams"); !errors.Is(err, allocator.ErrLevel) || !strings.Contains(err.Error(), "block streams needs cluster feature level 1; the cluster is at level 0") {
		t.Fatalf("CheckLevel: %v", err)
	}

	old.Kill() // replaced by a coild of this release
	if err = admin.RequireLevel(ctx, events.Level1, "pool reservations"); err != nil {
		t.Fatalf("no old coild left: %v", err)
	}
	if cl, err = admin.Cluster(ctx); err != nil || cl.Level != events.Level1 {
		t.Fatalf("level after the first use: %d %v", cl.Level, err)
	}
	if err = allocator.CheckLevel(cl, events.Level1, "block streams"); err != nil {
		t.Fatal(err)
	}
	// A later old coild cannot hold a raise back any more (levels never go down): the
	// feature stays on, and the old coild stops at ClusterLevelRaised (see events).
	old2 := allocatortest.Start(t, cli, log, "n-old2", allocatortest.Options{Prefix: "/coil/", AliveValue: "n-old2"})
	t.Cleanup(old2.Kill)
	if err = admin.RequireLevel(ctx, events.Level1, "pool reservations"); err != nil {
		t.Fatal(err)
	}
	st, err := admin.LevelStatus(ctx)
	if err != nil || st.Cluster != 1 || len(st.Behind) != 1 || st.Behind[0] != "n-old2" || len(st.Nodes) != 2 {
		t.Fatalf("LevelStatus = %+v, %v", st, err)
	}
}

// The in-memory log has no coilds: RaiseLevel raises freely, up to this build's level.
func TestRaiseLevelMemLog(t *testing.T) {
	ctx := context.Background()
	admin := &allocator.Admin{Log: events.NewMemLog(), Clock: events.SystemClock{}, Actor: "test"}
	if from, now, err := admin.RaiseLevel(ctx, 0); err != nil || from != 0 || now != events.CurrentLevel {
		t.Fatalf("RaiseLevel = %d %d %v", from, now, err)
	}
	if _, _, err := admin.RaiseLevel(ctx, events.CurrentLevel+1); !errors.Is(err, allocator.ErrLevel) {
		t.Fatalf("beyond this build: %v", err)
	}
	var c projection.Cluster
	if err := allocator.CheckLevel(&c, events.LevelBase, "x"); err != nil {
		t.Fatal(err)
	}
}
