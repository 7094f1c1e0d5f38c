package kube_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube"
	"github.com/coil-net/coil/kube/kubetest"
)

func startCache(t *testing.T, s *kubetest.APIServer, node string) *kube.PodCache {
	t.Helper()
	c := kube.NewPodCache(kube.PodCacheConfig{Client: s.Client(t), Node: node, Logger: testutil.Logger(t, slog.LevelInfo)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := c.WaitSynced(wctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// The pool comes from the pod's annotation, else its namespace's, else the network
// config, else the default; a bad annotation or an unknown pod is an error, never a
// fallback to the next source.
func TestResolvePool(t *testing.T) {
	s := kubetest.Start(t)
	cs := s.Client(t)
	kubetest.CreateNamespace(t, cs, "plain", nil)
	kubetest.CreateNamespace(t, cs, "annotated", map[string]string{kube.PoolAnnotation: "ns-pool"})
	podA := kubetest.CreatePod(t, cs, "annotated", "a", "n1", map[string]string{kube.PoolAnnotation: "pod-pool"})
	podB := kubetest.CreatePod(t, cs, "annotated", "b", "n1", nil)
	podC := kubetest.CreatePod(t, cs, "plain", "c", "n1", nil)
	kubetest.CreatePod(t, cs, "plain", "bad", "n1", map[string]string{kube.PoolAnnotation: ""})
	kubetest.CreatePod(t, cs, "plain", "bad2", "n1", map[string]string{kube.PoolAnnotation: "Not_A_Pool"})
	c := startCache(t, s, "n1")
	ctx := context.Background()

	for _, tc := range []struct {
		ref     kube.PodRef
		netconf string
		pool    string
		source  kube.Source
		uid     string
	}{
		{kube.PodRef{Namespace: "annotated", Name: "a"}, "nc-pool", "pod-pool", kube.SourcePodAnnotation, string(podA.UID)},
		{kube.PodRef{Namespace: "annotated", Name: "a", UID: string(podA.UID)}, "", "pod-pool", kube.SourcePodAnnotation, string(podA.UID)},
		{kube.PodRef{Namespace: "annotated", Name: "b"}, "nc-pool", "ns-pool", kube.SourceNamespaceAnnotation, string(podB.UID)},
		{kube.PodRef{Namespace: "plain", Name: "c"}, "nc-pool", "nc-pool", kube.SourceNetConf, string(podC.UID)},
		{kube.PodRef{Namespace: "plain", Name: "c"}, "", "dflt", kube.SourceDefault, string(podC.UID)},
		{kube.PodRef{}, "nc-pool", "nc-pool", kube.SourceNetConf, ""}, // not a Kubernetes pod (cnitool)
		{kube.PodRef{}, "", "dflt", kube.SourceDefault, ""},
	} {
		sel, err := c.ResolvePool(ctx, tc.ref, tc.netconf, "dflt")
		if err != nil {
			t.Errorf("%v netconf %q: %v", tc.ref, tc.netconf, err)
			continue
		}
		if sel.Pool != tc.pool || sel.Source != tc.source || sel.PodUID != tc.uid {
			t.Errorf("%v netconf %q: got %+v, want pool %q from %q uid %s", tc.ref, tc.netconf, sel, tc.pool, tc.source, tc.uid)
		}
	}

	// The fallbacks of a disabled pool: the pools of the sources after the chosen one,
	// each once, the chosen pool left out.
	for _, tc := range []struct {
		ref       kube.PodRef
		netconf   string
		fallbacks string
	}{
		{kube.PodRef{Namespace: "annotated", Name: "a"}, "nc-pool", "ns-pool,nc-pool,dflt"},
		{kube.PodRef{Namespace: "annotated", Name: "a"}, "dflt", "ns-pool,dflt"},
		{kube.PodRef{Namespace: "annotated", Name: "b"}, "nc-pool", "nc-pool,dflt"},
		{kube.PodRef{Namespace: "plain", Name: "c"}, "nc-pool", "dflt"},
		{kube.PodRef{Namespace: "plain", Name: "c"}, "", ""},
		{kube.PodRef{}, "dflt", ""},
	} {
		sel, err := c.ResolvePool(ctx, tc.ref, tc.netconf, "dflt")
		if got := strings.Join(sel.Fallbacks, ","); err != nil || got != tc.fallbacks {
			t.Errorf("%v netconf %q: fallbacks %q (%v), want %q", tc.ref, tc.netconf, got, err, tc.fallbacks)
		}
	}

	// coild reads its Node object's labels (pools with a node selector).
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"zone": "a"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if lbls, err := c.NodeLabels(ctx, "n1"); err != nil || len(lbls) != 1 || lbls["zone"] != "a" {
		t.Errorf("NodeLabels(n1) = %v, %v", lbls, err)
	}
	if _, err := c.NodeLabels(ctx, "nosuch"); !errors.Is(err, kube.ErrNodeNotFound) {
		t.Errorf("NodeLabels(nosuch): %v", err)
	}

	for _, tc := range []struct {
		ref  kube.PodRef
		want error
	}{
		{kube.PodRef{Namespace: "plain", Name: "bad"}, kube.ErrBadAnnotation},
		{kube.PodRef{Namespace: "plain", Name: "bad2"}, kube.ErrBadAnnotation},
		{kube.PodRef{Namespace: "plain", Name: "nosuch"}, kube.ErrPodNotFound},
		{kube.PodRef{Namespace: "annotated", Name: "a", UID: "0000-not-its-uid"}, kube.ErrPodNotFound},
	} {
		sel, err := c.ResolvePool(ctx, tc.ref, "nc-pool", "dflt")
		if !errors.Is(err, tc.want) {
			t.Errorf("%v: got %+v, %v; want %v", tc.ref, sel, err, tc.want)
			continue
		}
		t.Logf("%v: %v", tc.ref, err)
	}

	// A pod created after the informers synced is found (cache or a direct GET), and a
	// later annotation on its namespace is seen through the informer.
	podD := kubetest.CreatePod(t, cs, "plain", "d", "n1", nil)
	sel, err := c.ResolvePool(ctx, kube.PodRef{Namespace: "plain", Name: "d", UID: string(podD.UID)}, "", "dflt")
	if err != nil || sel.Pool != "dflt" {
		t.Fatalf("new pod: %+v %v", sel, err)
	}
	ns, err := cs.CoreV1().Namespaces().Get(ctx, "plain", metav1GetOptions())
	if err != nil {
		t.Fatal(err)
	}
	ns.Annotations = map[string]string{kube.PoolAnnotation: "later"}
	if _, err = cs.CoreV1().Namespaces().Update(ctx, ns, metav1UpdateOptions()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		sel, err = c.ResolvePool(ctx, kube.PodRef{Namespace: "plain", Name: "d"}, "nc-pool", "dflt")
		return err == nil && sel.Pool == "later" && sel.Source == kube.SourceNamespaceAnnotation
	}, "namespace annotation added later is used (last %+v %v)", &sel, &err)
}
