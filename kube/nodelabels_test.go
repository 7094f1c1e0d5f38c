package kube_test

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/errors"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/kube"
	"github.com/coil-net/coil/kube/kubetest"
)

// countingTransport counts the GETs of one path.
type countingTransport struct {
	next http.RoundTripper
	path string
	n    *atomic.Int64
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && r.URL.Path == c.path {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

// coild's own Node object is watched: a label change calls OnNodeLabels and NodeLabels
// then returns the new labels from the informer, without a GET of the Node; another
// node's labels, or a node that does not exist, are still asked of the API server.
func TestNodeLabelsFromInformer(t *testing.T) {
	s := kubetest.Start(t)
	admin := s.Client(t)
	ctx := context.Background()
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"zone": "a"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2", Labels: map[string]string{"zone": "z"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var gets atomic.Int64
	rc := s.RESTConfig()
	rc.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return countingTransport{next: rt, path: "/api/v1/nodes/n1", n: &gets}
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	c := kube.NewPodCache(kube.PodCacheConfig{Client: cs, Node: "n1", Logger: testutil.Logger(t, slog.LevelInfo),
		OnNodeLabels: func() { calls.Add(1) }})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })

	zone := func(name string) string {
		l, lerr := c.NodeLabels(ctx, name)
		if lerr != nil {
			t.Fatalf("NodeLabels(%s): %v", name, lerr)
		}
		return l["zone"]
	}
	// The informer's first list is an Add: one call.
	testutil.Eventually(t, 30*time.Second, func() bool { return calls.Load() >= 1 }, "OnNodeLabels after the first list")
	if z := zone("n1"); z != "a" {
		t.Fatalf("n1's zone %q, want a", z)
	}
	before, callsBefore := gets.Load(), calls.Load()

	n, err := admin.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Labels["zone"] = "b"
	if _, err = admin.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() bool { return calls.Load() > callsBefore }, "OnNodeLabels after the label change")
	if z := zone("n1"); z != "b" {
		t.Errorf("n1's zone after the change %q, want b", z)
	}
	if got := gets.Load() - before; got != 0 {
		t.Errorf("NodeLabels(n1) sent %d GETs of the Node once the informer listed, want 0 (read from its cache)", got)
	}

	// Labels handed out are a copy: changing them changes nothing in the cache.
	l, err := c.NodeLabels(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	l["zone"] = "mutated"
	if z := zone("n1"); z != "b" {
		t.Errorf("n1's zone after mutating a returned map %q, want b", z)
	}

	// Not its own node: the API server answers.
	if z := zone("n2"); z != "z" {
		t.Errorf("n2's zone %q, want z", z)
	}
	if _, err := c.NodeLabels(ctx, "nosuch"); !errors.Is(err, kube.ErrNodeNotFound) {
		t.Errorf("NodeLabels(nosuch): %v, want ErrNodeNotFound", err)
	}
}
