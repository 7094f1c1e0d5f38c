// Command kube measures pod start latency on a real kubelet node (lab/kubelab) with Coil
// and, on the same node in the same run, with ptp + host-local v1.10.0 as the CNI: N pods
// created at once, each timed from its Create call to the first time the API shows it
// Running with a pod IP; p50 and p99 per round. Then `crictl runp` latency with both
// (one sandbox at a time). Rounds alternate Coil and ptp. The ptp rounds put
// 05-ptp.conflist into the node's /etc/cni/net.d, which containerd picks over Coil's
// 10-coil.conflist (the first file wins), and remove it after. See docs/benchmarks.md.
//
//	go run ./bench/kube [-pods 30] [-rounds 3] [-runp 30]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/coil-net/coil/bench/benchenv"
	"github.com/coil-net/coil/internal/testutil"
	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/kubelab"
)

func main() {
	pods := flag.Int("pods", 30, "pods per round")
	rounds := flag.Int("rounds", 3, "rounds per CNI")
	runp := flag.Int("runp", 30, "crictl runp calls per CNI")
	flag.Parse()
	if err := run(*pods, *rounds, *runp); err != nil {
		fmt.Fprintf(os.Stderr, "bench/kube: %+v\n", err)
		os.Exit(1)
	}
}

func run(nPods, rounds, nRunp int) error {
	if err := runpBench(nRunp); err != nil {
		return err
	}
	if nPods == 0 {
		return nil
	}
	return podBench(nPods, rounds)
}

// cniFiles copies ptp and host-local into the node's /opt/cni/bin and returns a function
// that puts (or removes) 05-ptp.conflist, which containerd then prefers over Coil's.
func cniFiles(n *kubelab.Node, root string) (func(on bool) error, string, error) {
	ptp, err := exec.LookPath("ptp")
	if err != nil {
		ptp = filepath.Join(root, ".tools", "bin", "ptp")
	}
	hostLocal := filepath.Join(filepath.Dir(ptp), "host-local")
	for _, b := range []string{ptp, hostLocal} {
		data, err := os.ReadFile(b)
		if err != nil {
			return nil, "", err
		}
		if err := os.WriteFile(filepath.Join(n.Dir, "cni-bin", filepath.Base(b)), data, 0o755); err != nil {
			return nil, "", err
		}
	}
	ptpConf := filepath.Join(n.Dir, "cni-conf", "05-ptp.conflist")
	return func(on bool) error {
		if !on {
			if err := os.Remove(ptpConf); err != nil && !os.IsNotExist(err) {
				return err
			}
			return nil
		}
		conf := `{"cniVersion": "1.0.0", "name": "ptp", "plugins": [{"type": "ptp", "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.110.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}`
		return os.WriteFile(ptpConf, []byte(conf), 0o644)
	}, filepath.Dir(ptp), nil
}

// runpBench: crictl runp on a runtime-only node (containerd, no kubelet) whose CNI is
// Coil run directly (docs/kubernetes.md: a sandbox of no Kubernetes pod), against ptp +
// host-local on the same node, alternating.
func runpBench(nRunp int) error {
	ctx, stop := lab.Signals(context.Background())
	defer stop()
	root, ok := testutil.RepoRoot()
	if !ok {
		return fmt.Errorf("repository root not found")
	}
	bin := filepath.Join(root, "bin")
	images, err := kubelab.LoadImages(filepath.Join(bin, "images"))
	if err != nil {
		return err
	}
	_, _ = lab.Sweep(ctx, "benchrunp")
	c, err := kubelab.Start(ctx, kubelab.Config{Name: "benchrunp", Nodes: 1, Kit: kubelab.DefaultKit(bin), RuntimeOnly: true,
		Images: images})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	n := c.Nodes[0]
	usePTP, _, err := cniFiles(n, root)
	if err != nil {
		return err
	}
	if _, err := n.StartPlainCoil(ctx, "10.100.0.0/16", ""); err != nil {
		return err
	}
	fmt.Printf("# %s, %d cores, kernel %s, load %s\n", time.Now().UTC().Format(time.RFC3339), nproc(), benchenv.Kernel(), benchenv.LoadAvg())
	fmt.Printf("# crictl runp latency (sandbox with its network, one at a time; crictl's own start included), %d per CNI, alternating\n", nRunp)
	runpRes := map[string][]time.Duration{}
	for _, cni := range []string{"coil", "ptp", "coil", "ptp"} {
		if err := usePTP(cni == "ptp"); err != nil {
			return err
		}
		if err := waitCNI(ctx, n, cni); err != nil {
			return err
		}
		lat, err := runpRound(ctx, n, cni, nRunp/2)
		if err != nil {
			return err
		}
		runpRes[cni] = append(runpRes[cni], lat...)
	}
	_ = usePTP(false)
	for _, cni := range []string{"coil", "ptp"} {
		fmt.Printf("runp  %-5s p50 %6.0f ms  p99 %6.0f ms\n", cni, ms(pct(runpRes[cni], 50)), ms(pct(runpRes[cni], 99)))
	}
	fmt.Printf("runp coil/ptp p50 ratio %.2f\n", float64(pct(runpRes["coil"], 50))/float64(pct(runpRes["ptp"], 50)))
	return nil
}

func podBench(nPods, rounds int) error {
	ctx, stop := lab.Signals(context.Background())
	defer stop()
	root, ok := testutil.RepoRoot()
	if !ok {
		return fmt.Errorf("repository root not found")
	}
	bin := filepath.Join(root, "bin")
	if _, err := os.Stat(filepath.Join(bin, "etcd")); err != nil {
		if err := kubelab.BuildEtcd(ctx, bin); err != nil {
			return err
		}
	}
	images, err := kubelab.LoadImages(filepath.Join(bin, "images"))
	if err != nil {
		return err
	}
	_, _ = lab.Sweep(ctx, "benchkube")
	c, err := kubelab.Start(ctx, kubelab.Config{Name: "benchkube", Nodes: 1, Kit: kubelab.DefaultKit(bin),
		Images: images})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Coilctl(ctx, "pool", "create", "default", "10.100.0.0/16", "--block-size-bits", "5"); err != nil {
		return err
	}
	if err := c.InstallCoil(ctx, kubelab.CoilOptions{DeployDir: filepath.Join(root, "deploy")}); err != nil {
		return err
	}
	n := c.Nodes[0]
	usePTP, _, err := cniFiles(n, root)
	if err != nil {
		return err
	}
	fmt.Printf("# %s, %d cores, kernel %s, load %s\n", time.Now().UTC().Format(time.RFC3339), nproc(), benchenv.Kernel(), benchenv.LoadAvg())
	fmt.Printf("# pod start latency (Create -> Running with IP), %d pods at once on one kubelet node, %d rounds per CNI\n", nPods, rounds)
	res := map[string][]time.Duration{}
	for r := range rounds {
		for _, cni := range []string{"coil", "ptp"} {
			if err := usePTP(cni == "ptp"); err != nil {
				return err
			}
			// containerd reloads the CNI directory on change; let the change land.
			if err := waitCNI(ctx, n, cni); err != nil {
				return err
			}
			lat, err := podRound(ctx, c, n.Name, fmt.Sprintf("%s-%d", cni, r), nPods)
			if err != nil {
				return err
			}
			res[cni] = append(res[cni], lat...)
			fmt.Printf("round %d %-5s p50 %6.0f ms  p99 %6.0f ms\n", r, cni, ms(pct(lat, 50)), ms(pct(lat, 99)))
		}
	}
	_ = usePTP(false)
	fmt.Printf("all   coil  p50 %6.0f ms  p99 %6.0f ms\n", ms(pct(res["coil"], 50)), ms(pct(res["coil"], 99)))
	fmt.Printf("all   ptp   p50 %6.0f ms  p99 %6.0f ms\n", ms(pct(res["ptp"], 50)), ms(pct(res["ptp"], 99)))
	fmt.Printf("coil/ptp p50 ratio %.2f\n", float64(pct(res["coil"], 50))/float64(pct(res["ptp"], 50)))

	return nil
}

// waitCNI waits until containerd's CNI status names the network that should be in use.
func waitCNI(ctx context.Context, n *kubelab.Node, cni string) error {
	want := `"Name": "k8s-pod-network"`
	if n.Cluster().Config.RuntimeOnly {
		want = `"Name": "coil-plain"`
	}
	if cni == "ptp" {
		want = `"Name": "ptp"`
	}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := n.Crictl(ctx, "info")
		if err == nil && strings.Contains(string(out), want) {
			return nil
		}
		last = string(out)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("containerd did not switch to %s (%s not in crictl info):\n%s", cni, want, last)
}

func podRound(ctx context.Context, c *kubelab.Cluster, node, name string, n int) ([]time.Duration, error) {
	cs, err := c.Client()
	if err != nil {
		return nil, err
	}
	ns := "bench-" + name
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	defer func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		// Wait for the pods to go, so rounds do not overlap.
		for range 600 {
			l, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
			if err == nil && len(l.Items) == 0 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var mu sync.Mutex
	created := map[string]time.Time{}
	done := map[string]time.Duration{}
	for i := range n {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%02d", i), Namespace: ns},
			Spec: corev1.PodSpec{
				NodeName: node, TerminationGracePeriodSeconds: new(int64),
				Containers: []corev1.Container{{Name: "web", Image: c.Config.Images.Workload, ImagePullPolicy: corev1.PullNever}},
			},
		}
		mu.Lock()
		created[p.Name] = time.Now()
		mu.Unlock()
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	timeout := time.After(5 * time.Minute)
	for len(done) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, fmt.Errorf("watch closed")
			}
			if ev.Type != watch.Modified && ev.Type != watch.Added {
				continue
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			if _, seen := done[p.Name]; !seen && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				mu.Lock()
				done[p.Name] = time.Since(created[p.Name])
				mu.Unlock()
			}
		case <-timeout:
			return nil, fmt.Errorf("round %s: %d of %d pods running after 5 minutes", name, len(done), n)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make([]time.Duration, 0, n)
	for _, d := range done {
		out = append(out, d)
	}
	return out, nil
}

func runpRound(ctx context.Context, n *kubelab.Node, cni string, count int) ([]time.Duration, error) {
	dir, err := os.MkdirTemp("", "bench-runp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var lat []time.Duration
	for i := range count {
		f := filepath.Join(dir, fmt.Sprintf("p%d.json", i))
		conf := fmt.Sprintf(`{"metadata": {"name": "runp-%s-%d", "namespace": "bench", "uid": "runp-%s-%d-%d", "attempt": 0}, "linux": {}, "log_directory": "/tmp"}`,
			cni, i, cni, i, time.Now().UnixNano())
		if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		t0 := time.Now()
		id, err := n.Crictl(ctx, "runp", f)
		if err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
		sid := strings.TrimSpace(string(id))
		if _, err := n.Crictl(ctx, "stopp", sid); err != nil {
			return nil, err
		}
		if _, err := n.Crictl(ctx, "rmp", sid); err != nil {
			return nil, err
		}
	}
	return lat, nil
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func nproc() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}
