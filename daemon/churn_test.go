package daemon_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
)

// TestChurnWithReconciler runs concurrent ADDs and DELs while the reconciler runs every
// few milliseconds: the reconciler must never take an in-flight or just-finished ADD or
// DEL for a leak (releasing a live pod's address, deleting a live pod's veth).
func TestChurnWithReconciler(t *testing.T) {
	e := newEnv(t)
	e.defaultPool()
	cfg := e.config()
	cfg.ReconcileEvery = 2 * time.Millisecond
	e.startDaemon(cfg)
	client := cniproto.NewClient(e.sock, 30*time.Second)
	ctx := context.Background()

	const pods = 24
	const rounds = 3
	// A new sandbox has a new namespace: the previous round's DELs may still be running.
	paths := make([]string, pods*rounds)
	for i := range paths {
		_, paths[i] = e.pod(fmt.Sprintf("c%d", i))
	}
	req := func(i, round int) *cniproto.Request {
		return &cniproto.Request{ContainerID: fmt.Sprintf("churn%03d-%d", i, round), IfName: "eth0", NetNS: paths[round*pods+i],
			PodNamespace: "default", PodName: fmt.Sprintf("p%d", i)}
	}
	run := func(f func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, pods)
		for i := range pods {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = f(i) }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("pod %d: %v", i, err)
			}
		}
	}
	for round := range rounds {
		run(func(i int) error { _, err := client.Add(ctx, req(i, round)); return err })
		h := e.held()
		for i := range pods {
			if _, ok := h[attachKey{req(i, round).ContainerID, "eth0"}]; !ok {
				t.Fatalf("round %d: pod %d holds no address right after its ADD", round, i)
			}
		}
		run(func(i int) error { return client.Del(ctx, req(i, round)) })
	}
	waitFor(t, func() bool { return len(e.held()) == 0 && len(veths(t, e.nodeNS)) == 0 }, "all DELs done")
	e.waitConverged()
	releases, appends := 0, map[int64]bool{}
	for _, ev := range e.nodeEvents() {
		if p, ok := ev.Payload.(*events.AddressReleased); ok {
			releases++
			appends[ev.Revision] = true
			if p.Reason != "CNI DEL" {
				t.Errorf("%s released with %q: the reconciler raced an ADD or DEL", p.ContainerID, p.Reason)
			}
		}
	}
	t.Logf("%d releases in %d appends", releases, len(appends))
}
