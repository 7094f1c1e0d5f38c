package netplumb_test

import (
	"context"
	"testing"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/netplumb"
)

// listed returns the Coil host link of that name, or ok=false.
func listed(t *testing.T, e *env, name string) (netplumb.HostLink, bool) {
	t.Helper()
	links, err := e.p.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, l := range links {
		if l.Name == name {
			return l, true
		}
	}
	return netplumb.HostLink{}, false
}

// Prepare makes the pair, up, in the pending group, with no address or route; Finish
// configures it as Setup does and moves it out of the pending group.
func TestPrepareFinish(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pod := mustPod("c-prep", "eth0", e.podPath, "10.1.5.1", "fd00::5:1")
	name := netplumb.HostVethName(pod.ContainerID, pod.IfName)
	pd, err := e.p.Prepare(ctx, netplumb.Pod{ContainerID: pod.ContainerID, IfName: pod.IfName, NetNS: pod.NetNS})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	l, ok := listed(t, e, name)
	if !ok || !l.Pending || !l.Up || len(l.Routes) != 0 {
		t.Fatalf("after Prepare: %+v (listed %v), want a pending, up link without routes", l, ok)
	}
	if got := globalAddrs(t, e.pod, "eth0"); len(got) != 0 {
		t.Fatalf("pod addresses after Prepare: %v, want none", got)
	}
	att, err := pd.Finish(ctx, pod.Addrs)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if err = e.p.Check(ctx, pod); err != nil {
		t.Fatalf("Check after Finish: %v", err)
	}
	if l, _ = listed(t, e, name); l.Pending || len(l.Routes) != 2 {
		t.Fatalf("after Finish: %+v, want not pending with 2 routes", l)
	}
	if _, err = pd.Finish(ctx, pod.Addrs); !errors.Is(err, netplumb.ErrInvalidArgument) {
		t.Fatalf("second Finish: %v, want ErrInvalidArgument", err)
	}
	// Setup over the finished pair changes nothing and answers the same.
	if again := setup(t, e, pod); again.HostIndex != att.HostIndex || again.PodIndex != att.PodIndex {
		t.Fatalf("Setup after Finish: %+v, want %+v", again, att)
	}
	// Abort of a Prepare that found a finished pair leaves it alone.
	pd, err = e.p.Prepare(ctx, pod)
	if err != nil {
		t.Fatalf("Prepare of a finished pair: %v", err)
	}
	if err := pd.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if err := e.p.Check(ctx, pod); err != nil {
		t.Fatalf("Check after Abort of an existing pair: %v", err)
	}
}

// Abort deletes a pair Prepare made; Finish with bad addresses deletes it too.
func TestPrepareAbort(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pod := netplumb.Pod{ContainerID: "c-abort", IfName: "eth0", NetNS: e.podPath}
	name := netplumb.HostVethName(pod.ContainerID, pod.IfName)
	pd, err := e.p.Prepare(ctx, pod)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if err = pd.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if err = pd.Abort(); err != nil {
		t.Fatalf("second Abort: %v", err)
	}
	if linkExists(t, e.node, name) || linkExists(t, e.pod, "eth0") {
		t.Fatalf("pair still there after Abort")
	}
	pd, err = e.p.Prepare(ctx, pod)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if _, err := pd.Finish(ctx, nil); !errors.Is(err, netplumb.ErrInvalidArgument) {
		t.Fatalf("Finish without address: %v, want ErrInvalidArgument", err)
	}
	if linkExists(t, e.node, name) || linkExists(t, e.pod, "eth0") {
		t.Fatalf("pair still there after a failed Finish")
	}
	if _, err := e.p.Prepare(ctx, netplumb.Pod{ContainerID: "c", IfName: "eth0", NetNS: "/var/run/netns/coiltest-does-not-exist"}); !errors.Is(err, netplumb.ErrNetNSNotFound) {
		t.Fatalf("Prepare in a missing namespace: %v, want ErrNetNSNotFound", err)
	}
}

// A pair left pending (a Setup interrupted between Prepare and Finish) is converged by
// the next Setup, and TeardownMany deletes pending pairs.
func TestPendingPairConverges(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pod := mustPod("c-pend", "eth0", e.podPath, "10.1.5.2")
	name := netplumb.HostVethName(pod.ContainerID, pod.IfName)
	if _, err := e.p.Prepare(ctx, pod); err != nil { // never finished: the "crash"
		t.Fatalf("Prepare: %v", err)
	}
	setup(t, e, pod)
	if err := e.p.Check(ctx, pod); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if l, _ := listed(t, e, name); l.Pending {
		t.Fatalf("still pending after Setup: %+v", l)
	}

	other := netplumb.Pod{ContainerID: "c-pend2", IfName: "eth1", NetNS: e.podPath}
	if _, err := e.p.Prepare(ctx, other); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	other2 := netplumb.HostVethName(other.ContainerID, other.IfName)
	if err := e.p.TeardownMany(ctx, []string{name, other2}); err != nil {
		t.Fatalf("TeardownMany: %v", err)
	}
	if linkExists(t, e.node, name) || linkExists(t, e.node, other2) {
		t.Fatalf("links left after TeardownMany")
	}
}
