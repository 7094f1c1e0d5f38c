package kubenodes

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/coil-net/coil/lab/kubelab"
)

// TestWrongEtcdEndpoint: a user sets a wrong etcd endpoint in ConfigMap coil-config and
// restarts coild. coild is not Ready and its log says what to fix; a new pod waits for
// coild (waitsForCoild); once the ConfigMap is corrected and coild restarted, everything
// works and the waiting pod starts.
func TestWrongEtcdEndpoint(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	wrong := strings.Replace(c.Etcd, fmt.Sprint(kubelab.EtcdPort), "2399", 1)
	setEndpoint := func(ep string) {
		t.Helper()
		patch := fmt.Sprintf(`{"data": {"etcd-endpoints": %q}}`, ep)
		if _, err := c.Kubectl(ctx, "-n", "kube-system", "patch", "configmap", "coil-config", "--type", "merge", "-p", patch); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Kubectl(ctx, "-n", "kube-system", "rollout", "restart", "daemonset/coild"); err != nil {
			t.Fatal(err)
		}
	}
	setEndpoint(wrong)
	fixed := false
	t.Cleanup(func() {
		if !fixed {
			setEndpoint(c.Etcd)
			_ = c.WaitCoilReady(context.Background(), 3*time.Minute)
		}
	})
	cs := client(t, c)
	// The DaemonSet replaces one coild at a time (maxUnavailable 1), in an order of its
	// own choosing; the first one replaced cannot become Ready, so the rollout stops there.
	// That coild is not Ready, and its log names the endpoint and what to check.
	var logLine, badNode string
	waitUntil(t, 3*time.Minute, "a coild with the wrong endpoint says what to fix", func() (bool, string) {
		l, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=coild"})
		if err != nil {
			return false, err.Error()
		}
		var states []string
		for _, p := range l.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			out, _ := c.Kubectl(ctx, "-n", "kube-system", "logs", p.Name, "-c", "coild", "--previous=false")
			prev, _ := c.Kubectl(ctx, "-n", "kube-system", "logs", p.Name, "-c", "coild", "--previous")
			for _, line := range strings.Split(string(out)+"\n"+string(prev), "\n") {
				if strings.Contains(line, wrong) && strings.Contains(line, "--etcd-endpoints") && !podReady(&p) {
					logLine, badNode = line, p.Spec.NodeName
					return true, ""
				}
			}
			states = append(states, p.Name+" "+describe(&p))
		}
		return false, strings.Join(states, "; ")
	})
	t.Logf("coild's log on %s: %s", badNode, logLine)

	// A new pod waits for coild: its sandbox fails with "try again later" (code 11).
	namespace(t, c, "badconf", nil)
	if _, err := cs.CoreV1().Pods("badconf").Create(ctx, podSpec(c, "badconf", "waiting", badNode), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForCoildEvent(t, cs, "badconf", "waiting", 2*time.Minute)

	// Corrected: coild Ready everywhere, the waiting pod starts.
	setEndpoint(c.Etcd)
	fixed = true
	if err := c.WaitCoilReady(ctx, 3*time.Minute); err != nil {
		t.Fatalf("%+v", err)
	}
	waitRunning(t, c, "badconf", "waiting", 3*time.Minute)
}

func podReady(p *corev1.Pod) bool {
	for _, cd := range p.Status.Conditions {
		if cd.Type == corev1.PodReady {
			return cd.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitForCoildEvent waits until pod ns/name has an event saying it waits for coild
// (waitsForCoild), and logs it.
func waitForCoildEvent(t *testing.T, cs kubernetes.Interface, ns, name string, within time.Duration) {
	t.Helper()
	waitUntil(t, within, "pod "+ns+"/"+name+" waits for coild", func() (bool, string) {
		evs, err := cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, err.Error()
		}
		var msgs []string
		for _, e := range evs.Items {
			if waitsForCoild(e.Reason, e.Message) {
				t.Logf("pod %s/%s: %s: %s", ns, name, e.Reason, e.Message)
				return true, ""
			}
			msgs = append(msgs, e.Reason+": "+e.Message)
		}
		return false, strings.Join(msgs, " | ")
	})
}

// waitsForCoild reports whether a pod event says the pod waits for coild: either the
// kubelet holds it because the runtime's network is not ready (containerd 2 calls CNI
// STATUS, which fails while coild is down, so the kubelet does not even try ADD), or
// its sandbox's ADD failed with code 11's "try again later" (runtimes without STATUS).
func waitsForCoild(reason, msg string) bool {
	switch reason {
	case "NetworkNotReady":
		return strings.Contains(msg, "coild is unreachable")
	case "FailedCreatePodSandBox":
		return strings.Contains(msg, "try again")
	}
	return false
}
