package cli_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/coil-net/coil/internal/cli"
	"github.com/coil-net/coil/kube/kubetest"
)

// runningPod creates a pod and sets its status to Running with ips, as a kubelet would.
func runningPod(t *testing.T, cs kubernetes.Interface, ns, name string, ips ...string) *corev1.Pod {
	t.Helper()
	p := kubetest.CreatePod(t, cs, ns, name, "n1", nil)
	p.Status.Phase = corev1.PodRunning
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	p, err := cs.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status of pod %s/%s: %v", ns, name, err)
	}
	return p
}

// TestIPAMCheckPods (issue 14, item 7): `ipam check` against Kubernetes pods: clean → 0;
// an address held for a pod that is gone, or whose name has another UID, and a running
// pod whose address the log does not hold → exit 6 with each finding; without
// Kubernetes the pod comparison is skipped and the report says so. A coild that cannot
// be asked is a finding; bad flags are usage errors.
func TestIPAMCheckPods(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "default", "10.0.0.0/24", "--block-size-bits", "4", noSkipNB)
	s := kubetest.Start(t)
	cs := s.Client(t)
	kc := []string{"--kubeconfig", s.Kubeconfig}
	kubetest.CreateNamespace(t, cs, "ns", nil)
	n1, _ := e.startNode("n1")
	web := kubetest.CreatePod(t, cs, "ns", "web", "n1", nil)
	aWeb := e.allocPod(n1, "cweb", "ns", "web", string(web.UID))
	web.Status.Phase = corev1.PodRunning
	web.Status.PodIPs = []corev1.PodIP{{IP: aWeb.Addrs[0].String()}}
	if _, err := cs.CoreV1().Pods("ns").UpdateStatus(context.Background(), web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	runningPod(t, cs, "ns", "hostnet-like", "192.168.50.5") // an address in no Coil pool: not Coil's

	out := e.ok(append([]string{"ipam", "check"}, kc...)...)
	if !strings.Contains(out, "clean: 1 attachments, 2 pods, kernels of 0 nodes (-) compared\n") ||
		!strings.Contains(out, "skipped: kernel of node n1: no --coild n1=URL and no InternalIP in a Node object of that name\n") {
		t.Fatalf("clean check:\n%s", out)
	}
	out = e.ok("ipam", "check")
	if !strings.Contains(out, "clean: 1 attachments, pods not compared, kernels of 0 nodes (-) compared\n") ||
		!strings.Contains(out, "skipped: pod comparison: no Kubernetes access (no --kubeconfig, no $KUBECONFIG, no ~/.kube/config, not in a pod)\n") ||
		!strings.Contains(out, "skipped: kernel of node n1: no --coild n1=URL and no Kubernetes access to find its address\n") {
		t.Fatalf("check without Kubernetes:\n%s", out)
	}

	// A leak (pod gone), an old incarnation, a running pod the log does not know.
	gone := kubetest.CreatePod(t, cs, "ns", "gone", "n1", nil)
	aGone := e.allocPod(n1, "cgone", "ns", "gone", string(gone.UID))
	kubetest.DeletePod(t, cs, "ns", "gone")
	old := kubetest.CreatePod(t, cs, "ns", "sts-0", "n1", nil)
	e.allocPod(n1, "cold", "ns", "sts-0", string(old.UID))
	kubetest.DeletePod(t, cs, "ns", "sts-0")
	runningPod(t, cs, "ns", "sts-0")
	runningPod(t, cs, "ns", "stray", "10.0.0.77")

	r := e.run(append([]string{"ipam", "check"}, kc...)...)
	if r.code != cli.ExitFindings || r.stderr != "coilctl: ipam check: 3 findings\n" {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s", r.code, r.stderr, r.stdout)
	}
	t.Logf("report:\n%s", r.stdout)
	for _, w := range []string{
		"pod_address_not_in_log  n1    10.0.0.77  ns/stray",
		"pod_gone                n1    " + aGone.Addrs[0].String() + " ",
		"pod_replaced            n1",
		"3 findings: 3 attachments, 4 pods",
	} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("report lacks %q", w)
		}
	}
	r = e.run(append([]string{"-o", "json", "ipam", "check"}, kc...)...)
	var rep struct {
		Clean    bool `json:"clean"`
		Findings []struct {
			Kind, Address, Pod, ContainerID string
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != cli.ExitFindings || rep.Clean || len(rep.Findings) != 3 {
		t.Fatalf("json: exit %d, %v, %s", r.code, err, r.stdout)
	}
	if f := rep.Findings[1]; f.Kind != "pod_gone" || f.Pod != "ns/gone" || f.ContainerID != "cgone" {
		t.Errorf("finding %+v", f)
	}

	// Repair: release the leaked addresses; what is left is the stray pod.
	e.ok(append([]string{"address", "release", aGone.Addrs[0].String(), "--reason", "ipam check: pod_gone", "--yes"}, kc...)...)

	// coild endpoints.
	e.fails(cli.ExitUsage, []string{"ipam", "check", "--coild", "n1"}, `--coild "n1": want NODE=http://HOST:PORT`)
	e.fails(cli.ExitUsage, []string{"ipam", "check", "--coild", "n1=10.0.0.1:9384"}, `want NODE=http://HOST:PORT`)
	e.fails(cli.ExitUsage, []string{"ipam", "check", "--coild-port", "0"}, `--coild-port 0`)
	e.fails(cli.ExitNotFound, []string{"ipam", "check", "--coild", "nope=http://127.0.0.1:1"}, `node "nope" not found in the log`)
	r = e.run("ipam", "check", "--coild", "n1=http://127.0.0.1:1")
	if r.code != cli.ExitFindings || !strings.Contains(r.stdout, "coild_unreachable  n1") {
		t.Fatalf("unreachable coild: exit %d, stdout:\n%s", r.code, r.stdout)
	}
}
