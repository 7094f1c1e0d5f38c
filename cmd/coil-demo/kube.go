package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/errors"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coil-net/coil/lab"
	"github.com/coil-net/coil/lab/kubelab"
)

// kubeLabName is the kubelet demo's lab name ("demo" prefix: `coil-demo down` sweeps it).
const kubeLabName = "demokube"

// runKube is `coil-demo kube` (`make demo-kube`): a control plane and two kubelet nodes,
// Coil installed with `kubectl apply -k`, a Deployment spread over both nodes, every pod
// reaching every pod on the other node, the routes each node learnt and the event log.
func runKube(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("coil-demo kube", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "directory holding coilctl and etcd (make build)")
	images := fs.String("images", "bin/images", "directory of the image archives (make images)")
	deploy := fs.String("deploy", "deploy", "deploy/ directory (the overlay's base)")
	replicas := fs.Int("pods", 20, "replicas of the Deployment")
	events := fs.Int("events", 16, "how many of the last events to print")
	verbose := fs.Bool("v", false, "log the lab's progress to stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := lab.Signals(context.Background())
	defer stop()
	d := &demoRun{out: out, start: time.Now()}
	return d.exit(ctx, func() error {
		binDir, err := filepath.Abs(*bin)
		if err != nil {
			return err
		}
		imgDir, err := filepath.Abs(*images)
		if err != nil {
			return err
		}
		imgs, err := kubelab.LoadImages(imgDir)
		if err != nil {
			return err
		}
		cfg := kubelab.Config{Name: kubeLabName, Nodes: 2, Kit: kubelab.DefaultKit(binDir), Images: imgs, Logger: newLogger(*verbose)}
		return d.runKube(ctx, cfg, *deploy, *replicas, *events)
	}(), "cluster")
}

func (d *demoRun) runKube(ctx context.Context, cfg kubelab.Config, deploy string, replicas, nEvents int) (err error) {
	if _, serr := os.Stat(cfg.Kit.Bin("etcd")); serr != nil {
		d.step("building etcd into %s", cfg.Kit.BinDir)
		if err := kubelab.BuildEtcd(ctx, cfg.Kit.BinDir); err != nil {
			return err
		}
	}
	d.step("starting the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) in lab node n0 and %d kubelet nodes (containerd %s + kubelet %s, own network and mount namespaces, BIRD each)",
		cfg.Nodes, kubelab.ContainerdVersion, kubelab.KubeVersion)
	c, err := kubelab.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.tearDown("kubelets, containerd, pods (by cgroup), control plane, BIRD, namespaces", c.Close, &err)
	out, err := c.Kubectl(ctx, "get", "nodes", "-o", "wide")
	if err != nil {
		return err
	}
	d.printf("%s", indent(out))

	d.step("creating pool \"default\" 10.100.0.0/16 with /27 blocks, installing Coil: images imported into each node's containerd, kubectl apply -k <lab overlay of deploy/>")
	if _, err := c.Coilctl(ctx, "pool", "create", "default", "10.100.0.0/16", "--block-size-bits", "5"); err != nil {
		return err
	}
	if err := c.InstallCoil(ctx, kubelab.CoilOptions{DeployDir: deploy}); err != nil {
		return err
	}
	if out, err = c.Kubectl(ctx, "-n", "kube-system", "get", "pods", "-o", "wide"); err != nil {
		return err
	}
	d.printf("%s", indent(out))

	d.step("a Deployment of %d pods spread over both nodes", replicas)
	cs, err := c.Client()
	if err != nil {
		return err
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, webDeployment(c, int32(replicas)), metav1.CreateOptions{}); err != nil {
		return errors.Wrap(err, "create deployment")
	}
	var pods []corev1.Pod
	t0 := time.Now()
	for {
		list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return errors.Wrap(err, "list pods")
		}
		pods = pods[:0]
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && p.DeletionTimestamp == nil {
				pods = append(pods, p)
			}
		}
		if len(pods) == replicas {
			break
		}
		if time.Since(t0) > 3*time.Minute {
			return errors.Newf("only %d of %d pods running after 3 minutes", len(pods), replicas)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	d.printf("  %d pods Running in %.1fs\n", replicas, time.Since(t0).Seconds())
	if out, err = c.Kubectl(ctx, "get", "pods", "-o", "wide", "--sort-by", ".spec.nodeName"); err != nil {
		return err
	}
	d.printf("%s", indent(out))

	d.step("every pod fetches http://POD/ from every pod on the other node (kubectl exec POD -- coil-testapp probe ...)")
	ok, total, err := crossProbe(ctx, c, pods)
	if err != nil {
		return err
	}
	d.printf("  %d/%d cross-node requests answered\n", ok, total)

	d.step("routes each node learnt over BGP (main table, proto bird): one per block, not per pod")
	for _, n := range c.Lab.Nodes {
		rs, err := n.BGPRoutes(ctx)
		if err != nil {
			return err
		}
		own, err := n.ExportedBlocks(ctx)
		if err != nil {
			return err
		}
		role := "kubelet node"
		if n == c.CP {
			role = "control plane"
		}
		d.printf("  %s (%s, %s): %d route(s)\n", n.Name, role, n.FabricAddr, len(rs))
		d.printRoutes(rs)
		if n != c.CP {
			d.printf("    own blocks in export table 119 (announced by BIRD): %s\n", joinPrefixes(own))
		}
	}

	d.step("the event log (last %d events: coilctl events)", nEvents)
	if out, err = c.Coilctl(ctx, "events"); err != nil {
		return err
	}
	d.printf("%s", indent(lastLines(out, nEvents+1)))
	if ok != total {
		return errors.Newf("coil-demo: %d of %d cross-node requests failed", total-ok, total)
	}
	return nil
}

func webDeployment(c *kubelab.Cluster, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": "web"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64),
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{{
						Name: "web", Image: c.Config.Images.Workload, ImagePullPolicy: corev1.PullNever,
						Ports: []corev1.ContainerPort{{ContainerPort: kubelab.WorkloadPort}},
					}},
				},
			},
		},
	}
}

// crossProbe has every pod fetch every pod on another node, 4 pods at a time.
func crossProbe(ctx context.Context, c *kubelab.Cluster, pods []corev1.Pod) (ok, total int, err error) {
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	var mu sync.Mutex
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	var failures []string
	for _, from := range pods {
		var urls []string
		for _, to := range pods {
			if to.Spec.NodeName != from.Spec.NodeName {
				urls = append(urls, fmt.Sprintf("http://%s:%d/", to.Status.PodIP, kubelab.WorkloadPort))
			}
		}
		total += len(urls)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out, perr := c.Kubectl(ctx, append([]string{"exec", from.Name, "--", kubelab.WorkloadBinary, "probe", "-retry-for", "20s"}, urls...)...)
			n := 0 // coil-testapp probe prints "ok    TARGET ..." per answered target
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "ok ") {
					n++
				}
			}
			mu.Lock()
			ok += n
			if perr != nil {
				failures = append(failures, fmt.Sprintf("%s: %v", from.Name, perr))
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ok, total, ctx.Err()
	}
	if len(failures) > 0 && ok == 0 {
		return ok, total, errors.Newf("probes failed: %s", strings.Join(failures, "; "))
	}
	return ok, total, nil
}
