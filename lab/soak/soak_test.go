package soak_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab/demo"
	"github.com/coil-net/coil/lab/soak"
)

// TestSoak is the 60-second chaos soak (`make soak` runs it for 10 minutes): pods
// churned on 3 nodes through cnitool while coild, BIRD and etcd members are killed and
// paused; no invariant may break, and every fault must converge.
func TestSoak(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []string{"ip", "bird", "birdc", "cnitool", "ping", "unshare"} {
		testutil.RequireCommand(t, c)
	}
	dir := t.TempDir()
	ctx := context.Background()
	if err := demo.BuildBinaries(ctx, dir); err != nil {
		t.Fatalf("%+v", err)
	}
	if _, err := demo.BuildEtcd(ctx, dir); err != nil {
		t.Fatalf("%+v", err)
	}
	rep, err := soak.Run(ctx, soak.Config{
		Duration: 60 * time.Second, BinDir: dir,
		Logger: testutil.Logger(t, slog.LevelInfo),
	})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	t.Logf("\n%s", rep.Table())
	for _, v := range rep.Violations {
		t.Errorf("violation at %s: %s", v.At.Round(time.Millisecond), v.What)
	}
	total := 0
	for _, n := range rep.Faults {
		total += n
	}
	if total < 3 || rep.PodsAdded < 10 || rep.PodsDeleted < 5 {
		t.Errorf("the soak did too little to prove anything: %d faults, %d pods added, %d deleted", total, rep.PodsAdded, rep.PodsDeleted)
	}
	t.Log(rep.Summary())
}
