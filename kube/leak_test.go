package kube_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube"
	"github.com/coil-net/coil/kube/kubetest"
)

// staleCache is a PodCache whose informer never shows any pod: only the fresh GET can
// save an attachment.
type staleCache struct{ *kube.PodCache }

func (staleCache) CachedPod(string, string) *corev1.Pod { return nil }

// An attachment whose pod is gone is reported only after the grace period and a fresh
// GET; one whose pod exists never is, whatever the cache says; a pod recreated under the
// same name (new UID) leaves the old attachment leaked and the new one alone.
func TestLeakCollector(t *testing.T) {
	s := kubetest.Start(t)
	cs := s.Client(t)
	kubetest.CreateNamespace(t, cs, "app", nil)
	web := kubetest.CreatePod(t, cs, "app", "web-0", "n1", nil)
	other := kubetest.CreatePod(t, cs, "app", "db-0", "n1", nil)
	c := startCache(t, s, "n1")
	ctx := context.Background()
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	const grace = time.Minute
	lc := kube.NewLeakCollector(kube.LeakConfig{Pods: c, Grace: grace, Now: clock.Now})

	atts := []kube.Attachment{
		{ContainerID: "c-web", IfName: "eth0", Pod: kube.PodRef{Namespace: "app", Name: "web-0", UID: string(web.UID)}},
		{ContainerID: "c-db", IfName: "eth0", Pod: kube.PodRef{Namespace: "app", Name: "db-0", UID: string(other.UID)}},
		{ContainerID: "c-nouid", IfName: "eth0", Pod: kube.PodRef{Namespace: "app", Name: "db-0"}},
		{ContainerID: "c-cnitool", IfName: "eth0"}, // no pod: never a Kubernetes leak
	}
	check := func() []kube.Leak {
		t.Helper()
		leaks, err := lc.Check(ctx, atts)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return leaks
	}
	// Pods exist: nothing, however long.
	for range 3 {
		if l := check(); len(l) != 0 {
			t.Fatalf("leaks while every pod exists: %+v", l)
		}
		clock.Add(2 * grace)
	}
	// A cache that misses every pod: suspects, but the fresh GET finds them. Nothing.
	stale := kube.NewLeakCollector(kube.LeakConfig{Pods: staleCache{c}, Grace: grace, Now: clock.Now})
	for range 4 {
		leaks, err := stale.Check(ctx, atts)
		if err != nil || len(leaks) != 0 {
			t.Fatalf("stale cache: leaks %+v err %v while the pods exist", leaks, err)
		}
		clock.Add(grace)
	}

	// web-0 deleted: first seen missing, then only after the grace period reported.
	kubetest.DeletePod(t, cs, "app", "web-0")
	testutil.Eventually(t, 20*time.Second, func() bool { return c.CachedPod("app", "web-0") == nil }, "informer sees web-0 deleted")
	if l := check(); len(l) != 0 {
		t.Fatalf("reported at first sight: %+v", l)
	}
	clock.Add(grace - time.Second)
	if l := check(); len(l) != 0 {
		t.Fatalf("reported before the grace period: %+v", l)
	}
	clock.Add(time.Second)
	leaks := check()
	if len(leaks) != 1 || leaks[0].ContainerID != "c-web" || leaks[0].Kind != "pod_deleted" {
		t.Fatalf("after grace: %+v, want c-web pod_deleted", leaks)
	}
	if want := "pod app/web-0 (" + string(web.UID) + ") deleted: leaked address"; leaks[0].Reason != want {
		t.Errorf("reason %q, want %q", leaks[0].Reason, want)
	}

	// web-0 recreated (StatefulSet): the old attachment (old UID) is a leak, the new
	// pod's attachment is not; the attachment without a UID on db-0 is never touched.
	web2 := kubetest.CreatePod(t, cs, "app", "web-0", "n1", nil)
	testutil.Eventually(t, 20*time.Second, func() bool {
		p := c.CachedPod("app", "web-0")
		return p != nil && p.UID == web2.UID
	}, "informer sees the new web-0")
	atts = append(atts, kube.Attachment{ContainerID: "c-web2", IfName: "eth0", Pod: kube.PodRef{Namespace: "app", Name: "web-0", UID: string(web2.UID)}})
	if l := check(); len(l) != 0 {
		t.Fatalf("reported at first sight: %+v", l)
	}
	clock.Add(grace)
	leaks = check()
	if len(leaks) != 1 || leaks[0].ContainerID != "c-web" || leaks[0].Kind != "pod_replaced" || !strings.Contains(leaks[0].Reason, string(web2.UID)) {
		t.Fatalf("after recreate: %+v, want only c-web as pod_replaced", leaks)
	}
	t.Logf("leak reason: %s", leaks[0].Reason)
	// The pod reappears in the cache before the re-check: the suspicion is dropped.
	atts = atts[1:] // c-web released
	kubetest.DeletePod(t, cs, "app", "db-0")
	testutil.Eventually(t, 20*time.Second, func() bool { return c.CachedPod("app", "db-0") == nil }, "informer sees db-0 deleted")
	check()
	if lc.Suspects() != 2 { // c-db and c-nouid
		t.Fatalf("suspects %d, want 2", lc.Suspects())
	}
	kubetest.CreatePod(t, cs, "app", "db-0", "n1", nil) // same name, new UID
	testutil.Eventually(t, 20*time.Second, func() bool { return c.CachedPod("app", "db-0") != nil }, "informer sees db-0 again")
	clock.Add(grace)
	leaks = check()
	// c-db (recorded UID) belongs to the deleted pod: reported. c-nouid matches the new
	// pod by name only, so it is kept (the safe side) and no longer suspected.
	if len(leaks) != 1 || leaks[0].ContainerID != "c-db" || leaks[0].Kind != "pod_replaced" {
		t.Fatalf("got %+v, want c-db pod_replaced only", leaks)
	}
	if lc.Suspects() != 0 {
		t.Fatalf("suspects %d, want 0", lc.Suspects())
	}
}
