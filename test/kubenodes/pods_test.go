package kubenodes

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/coil-net/coil/lab/kubelab"
)

// WorkloadPort is the port the test workload serves HTTP on.
const WorkloadPort = kubelab.WorkloadPort

func client(t *testing.T, c *kubelab.Cluster) kubernetes.Interface {
	t.Helper()
	cs, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// namespace creates a namespace (with annotations) deleted when the test ends.
func namespace(t *testing.T, c *kubelab.Cluster, name string, annotations map[string]string) {
	t.Helper()
	cs := client(t, c)
	ctx := context.Background()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// podSpec is a pod of the test workload pinned to node.
func podSpec(c *kubelab.Cluster, ns, name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "kubenodes"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "web", Image: c.Config.Images.Workload, ImagePullPolicy: corev1.PullNever,
				Ports: []corev1.ContainerPort{{ContainerPort: WorkloadPort}},
			}},
		},
	}
}

// createPod creates the pod and waits until it runs with an address.
func createPod(t *testing.T, c *kubelab.Cluster, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	cs := client(t, c)
	if _, err := cs.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return waitRunning(t, c, p.Namespace, p.Name, 90*time.Second)
}

// waitRunning waits until the pod is Running with a pod IP and returns it.
func waitRunning(t *testing.T, c *kubelab.Cluster, ns, name string, within time.Duration) *corev1.Pod {
	t.Helper()
	cs := client(t, c)
	var got *corev1.Pod
	waitUntil(t, within, "pod "+ns+"/"+name+" running", func() (bool, string) {
		p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			got = p
			return true, ""
		}
		return false, describe(p)
	})
	return got
}

// describe is a one-line view of a pod's state and its latest events.
func describe(p *corev1.Pod) string {
	s := fmt.Sprintf("phase=%s ip=%s node=%s", p.Status.Phase, p.Status.PodIP, p.Spec.NodeName)
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			s += fmt.Sprintf(" %s waiting: %s %s", cs.Name, w.Reason, w.Message)
		}
	}
	return s
}

// deletePod deletes a pod and waits until it is gone.
func deletePod(t *testing.T, c *kubelab.Cluster, ns, name string) {
	t.Helper()
	cs := client(t, c)
	ctx := context.Background()
	if err := cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "pod "+ns+"/"+name+" deleted", func() (bool, string) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return apierrors.IsNotFound(err), err.Error()
		}
		return false, describe(p)
	})
}

// podAddr parses the pod's IP.
func podAddr(t *testing.T, p *corev1.Pod) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil {
		t.Fatalf("pod %s/%s IP %q: %v", p.Namespace, p.Name, p.Status.PodIP, err)
	}
	return a
}

// probe runs the workload's HTTP client in pod `from` (kubectl exec) against every
// target ("ip:port"); it fails the test on any failure, with the output.
func probe(t *testing.T, c *kubelab.Cluster, from *corev1.Pod, targets ...string) {
	t.Helper()
	out, err := probeErr(c, from, targets...)
	if err != nil {
		t.Fatalf("from %s/%s (%s on %s): %v\n%s", from.Namespace, from.Name, from.Status.PodIP, from.Spec.NodeName, err, out)
	}
}

func probeErr(c *kubelab.Cluster, from *corev1.Pod, targets ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{"-n", from.Namespace, "exec", from.Name, "--", kubelab.WorkloadBinary, "probe", "-retry-for", "10s"}
	for _, tg := range targets {
		args = append(args, "http://"+tg+"/")
	}
	out, err := c.Kubectl(ctx, args...)
	return strings.TrimSpace(string(out)), err
}

func hostPort(a netip.Addr, port int) string { return netip.AddrPortFrom(a, uint16(port)).String() }

// waitUntil polls cond every 100 ms until it holds; past within it fails the test with
// cond's last explanation.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.After(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%s: not within %s; last: %s", what, within, why)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

var metav1GetOptions = metav1.GetOptions{}
