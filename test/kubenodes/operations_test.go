package kubenodes

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coil-net/coil/lab/kubelab"
)

// coildPod returns the name of coild's pod on node.
func coildPod(t *testing.T, c *kubelab.Cluster, node string) *corev1.Pod {
	t.Helper()
	cs := client(t, c)
	l, err := cs.CoreV1().Pods("kube-system").List(context.Background(), metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/name=coild", FieldSelector: "spec.nodeName=" + node,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range l.Items {
		if l.Items[i].DeletionTimestamp == nil {
			return &l.Items[i]
		}
	}
	t.Fatalf("no coild pod on %s", node)
	return nil
}

// networkReady reads the runtime's NetworkReady condition through CRI (crictl info).
func networkReady(ctx context.Context, n *kubelab.Node) (bool, string, error) {
	out, err := n.Crictl(ctx, "info")
	if err != nil {
		return false, "", err
	}
	var info struct {
		Status struct {
			Conditions []struct {
				Type    string `json:"type"`
				Status  bool   `json:"status"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return false, "", fmt.Errorf("crictl info: %w", err)
	}
	for _, cd := range info.Status.Conditions {
		if cd.Type == "NetworkReady" {
			return cd.Status, cd.Reason + ": " + cd.Message, nil
		}
	}
	return false, "", fmt.Errorf("no NetworkReady condition in crictl info")
}

// TestCoildDownAndBack: coild's pod on n1 is deleted while the Coil image is missing from
// n1 (so its replacement cannot start: ErrImageNeverPull... or pull failure, named in
// its status), i.e. the plugin is installed and coild is not running. Meanwhile running
// pods keep working, the runtime reports NetworkReady=false (CNI STATUS fails), and a new
// pod waits for coild (waitsForCoild: the kubelet holds it, NetworkNotReady).
// Once the image is imported again and coild is back, NetworkReady is true and the
// waiting pod starts.
func TestCoildDownAndBack(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	n1, n2 := c.Nodes[0], c.Nodes[1]
	namespace(t, c, "down", nil)
	a := createPod(t, c, podSpec(c, "down", "a", n1.Name))
	b := createPod(t, c, podSpec(c, "down", "b", n2.Name))
	probe(t, c, a, hostPort(podAddr(t, b), WorkloadPort))

	// Take the Coil image away from n1, then coild's pod.
	if _, err := n1.Ctr(ctx, "images", "rm", c.Config.Images.Coil); err != nil {
		t.Fatal(err)
	}
	reimported := false
	t.Cleanup(func() {
		if !reimported {
			_ = n1.ImportImage(context.Background(), c.Config.Images.Archives()[0])
		}
	})
	old := coildPod(t, c, n1.Name)
	deletePod(t, c, "kube-system", old.Name)

	// The replacement cannot start: the image is not there, and its status says so.
	cs := client(t, c)
	waitUntil(t, 90*time.Second, "coild's replacement on n1 reports the missing image", func() (bool, string) {
		l, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=coild", FieldSelector: "spec.nodeName=" + n1.Name})
		if err != nil || len(l.Items) == 0 {
			return false, fmt.Sprint("no pod yet ", err)
		}
		p := l.Items[0]
		for _, st := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if w := st.State.Waiting; w != nil && (w.Reason == "ErrImageNeverPull" || w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
				t.Logf("coild's replacement: %s: %s", w.Reason, w.Message)
				return true, ""
			}
		}
		return false, describe(&p)
	})

	// The runtime's network is not ready while coild is down.
	waitUntil(t, 60*time.Second, "NetworkReady=false on n1 while coild is down", func() (bool, string) {
		ok, why, err := networkReady(ctx, n1)
		if err != nil {
			return false, err.Error()
		}
		return !ok, why
	})
	_, why, _ := networkReady(ctx, n1)
	t.Logf("n1 NetworkReady=false: %s", why)

	// Running pods keep working, both ways across nodes.
	probe(t, c, a, hostPort(podAddr(t, b), WorkloadPort))
	probe(t, c, b, hostPort(podAddr(t, a), WorkloadPort))

	// A new pod on n1 waits for coild.
	if _, err := cs.CoreV1().Pods("down").Create(ctx, podSpec(c, "down", "late", n1.Name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForCoildEvent(t, cs, "down", "late", 90*time.Second)
	if p, err := cs.CoreV1().Pods("down").Get(ctx, "late", metav1.GetOptions{}); err != nil || p.Status.Phase == corev1.PodRunning {
		t.Fatalf("pod down/late running while coild is down (%v)", err)
	}

	// The image comes back; the stuck coild pod is replaced and starts.
	if err := n1.ImportImage(ctx, c.Config.Images.Archives()[0]); err != nil {
		t.Fatal(err)
	}
	reimported = true
	stuck := coildPod(t, c, n1.Name)
	deletePod(t, c, "kube-system", stuck.Name)
	if err := c.WaitCoilReady(ctx, 2*time.Minute); err != nil {
		t.Fatalf("%+v", err)
	}
	waitUntil(t, 60*time.Second, "NetworkReady=true on n1 with coild back", func() (bool, string) {
		ok, why, err := networkReady(ctx, n1)
		if err != nil {
			return false, err.Error()
		}
		return ok, why
	})
	late := waitRunning(t, c, "down", "late", 3*time.Minute)
	probe(t, c, late, hostPort(podAddr(t, b), WorkloadPort))
	probe(t, c, a, hostPort(podAddr(t, b), WorkloadPort))
}

// TestKubeletRestartKeepsAddresses: restarting the kubelet changes no pod's address and
// sends no CNI DEL or ADD (the log has no new event for the node's attachments).
func TestKubeletRestartKeepsAddresses(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	n1 := c.Nodes[0]
	namespace(t, c, "restart", nil)
	var pods []*corev1.Pod
	for _, name := range []string{"a", "b", "c"} {
		pods = append(pods, createPod(t, c, podSpec(c, "restart", name, n1.Name)))
	}
	// This test's addresses only: pods of earlier tests may still be terminating (their
	// namespaces are deleted in the background) and release theirs meanwhile.
	held := func() string {
		t.Helper()
		out, err := c.Coilctl(ctx, "address", "list", "--node", n1.Name, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var all []map[string]any
		if err := json.Unmarshal(out, &all); err != nil {
			t.Fatalf("address list -o json: %v\n%s", err, out)
		}
		var mine []string
		for _, a := range all {
			if a["podNamespace"] == "restart" {
				b, _ := json.Marshal(a)
				mine = append(mine, string(b))
			}
		}
		if len(mine) != len(pods) {
			t.Fatalf("%d addresses of namespace restart on %s, want %d:\n%s", len(mine), n1.Name, len(pods), out)
		}
		return strings.Join(mine, "\n")
	}
	before := held()
	if err186 := n1.StopKubelet(); err186 != nil {
		t.Fatal(err186)
	}
	// The new kubelet reports its status once as it starts, then only when the status
	// changes or every 5 minutes (nodeStatusReportFrequency). Heartbeats are stored in
	// whole seconds: a report within the second the kubelet started reads as earlier
	// than a time.Now() taken then (the test waited 2 minutes for a second report that
	// way), hence the truncation.
	restarted := time.Now().Truncate(time.Second)
	if err189 := n1.StartKubelet(ctx); err189 != nil {
		t.Fatal(err189)
	}
	cs := client(t, c)
	// Ready again, with the kubelet's status reports flowing.
	waitUntil(t, 2*time.Minute, "n1 Ready after the kubelet restart", func() (bool, string) {
		node, err196 := cs.CoreV1().Nodes().Get(ctx, n1.Name, metav1.GetOptions{})
		if err196 != nil {
			return false, err196.Error()
		}
		for _, cd := range node.Status.Conditions {
			if cd.Type == corev1.NodeReady {
				return cd.Status == corev1.ConditionTrue && !cd.LastHeartbeatTime.Time.Before(restarted), cd.Reason + " (heartbeat " + cd.LastHeartbeatTime.UTC().Format(time.RFC3339) + ")"
			}
		}
		return false, "no Ready condition"
	})
	for _, p := range pods {
		q := waitRunning(t, c, p.Namespace, p.Name, time.Minute)
		if q.Status.PodIP != p.Status.PodIP {
			t.Errorf("pod %s: address %s before the kubelet restart, %s after", p.Name, p.Status.PodIP, q.Status.PodIP)
		}
		// The kubelet serves exec only once its pod manager has the pod again ("unable
		// to upgrade connection: pod does not exist" until then), which can lag Ready.
		waitUntil(t, time.Minute, "a probe from "+q.Name+" after the kubelet restart", func() (bool, string) {
			out, perr := probeErr(c, q, hostPort(podAddr(t, pods[0]), WorkloadPort))
			if perr != nil {
				return false, perr.Error() + ": " + out
			}
			return true, ""
		})
	}
	if after := held(); before != after {
		t.Errorf("n1's addresses changed across the kubelet restart:\nbefore %s\nafter  %s", before, after)
	}
}

// TestHostPortThroughPortmap: a pod's hostPort answers on its node's address, from the
// other node and from a pod there (portmap chained after coil in the installed conflist).
func TestHostPortThroughPortmap(t *testing.T) {
	c := need(t)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	namespace(t, c, "hostport", nil)
	p := podSpec(c, "hostport", "web", n1.Name)
	p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: WorkloadPort, HostPort: 18080, Protocol: corev1.ProtocolTCP}}
	createPod(t, c, p)
	client := createPod(t, c, podSpec(c, "hostport", "client", n2.Name))
	probe(t, c, client, hostPort(n1.FabricAddr, 18080))
}

// TestNodeDeletedBlocksReclaimed (last: it removes n2): n2's kubelet and coild stop (the
// node powered off: every process of it killed, BIRD stopped), `kubectl delete node n2`;
// coil-controller reclaims n2's blocks once its coild's etcd lease has expired, and n1
// has no route to them any more.
func TestNodeDeletedBlocksReclaimed(t *testing.T) {
	c := need(t)
	ctx := context.Background()
	n1, n2 := c.Nodes[0], c.Nodes[1]
	namespace(t, c, "reclaim", nil)
	createPod(t, c, podSpec(c, "reclaim", "x", n2.Name))
	owned := blocksOf(t, c, n2.Name)
	if len(owned) == 0 {
		t.Fatal("n2 owns no block")
	}
	waitUntil(t, 30*time.Second, "n1 learns n2's blocks", func() (bool, string) {
		got := routesAt(t, n1)
		for _, b := range owned {
			if !slices.Contains(got, b) {
				return false, fmt.Sprint(got)
			}
		}
		return true, ""
	})
	if err := n2.Shutdown(ctx); err != nil {
		t.Fatalf("%+v", err)
	}
	if _, err := c.Kubectl(ctx, "delete", "node", n2.Name); err != nil {
		t.Fatal(err)
	}
	// The lease (15 s TTL) expires, then the controller's next try (every 10 s) reclaims.
	waitUntil(t, 2*time.Minute, "n2's blocks reclaimed", func() (bool, string) {
		left := blocksOf(t, c, n2.Name)
		return len(left) == 0, fmt.Sprint("n2 still owns ", left)
	})
	waitUntil(t, 30*time.Second, "n1's routes to n2's blocks gone", func() (bool, string) {
		got := routesAt(t, n1)
		for _, b := range owned {
			if slices.Contains(got, b) {
				return false, fmt.Sprint(got)
			}
		}
		return true, ""
	})
	out, err := c.Coilctl(ctx, "events")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "NodeRetired") || !strings.Contains(string(out), "BlockReclaimed") {
		t.Errorf("no NodeRetired/BlockReclaimed event:\n%s", out)
	}
}

func blocksOf(t *testing.T, c *kubelab.Cluster, node string) []netip.Prefix {
	t.Helper()
	out, err := c.Coilctl(context.Background(), "block", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Node     string   `json:"node"`
		Prefixes []string `json:"prefixes"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var ps []netip.Prefix
	for _, r := range rows {
		if r.Node != node {
			continue
		}
		for _, s := range r.Prefixes {
			ps = append(ps, netip.MustParsePrefix(s))
		}
	}
	return ps
}

func routesAt(t *testing.T, n *kubelab.Node) []netip.Prefix {
	t.Helper()
	rs, err := n.BGPRoutes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ps []netip.Prefix
	for _, r := range rs {
		ps = append(ps, r.Dst)
	}
	return ps
}
