package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/ipamcheck"
)

// ErrFindings: `ipam check` found disagreements (exit 6); the report is on stdout.
var ErrFindings = errors.New("cli: ipam check found problems")

// ipamReport is what `ipam check` prints as JSON/YAML.
type ipamReport struct {
	Clean    bool                `json:"clean"`
	Findings []ipamcheck.Finding `json:"findings"`
	// Skipped says what was not compared, and why.
	Skipped []string `json:"skipped"`
	// Checked counts what was compared.
	Checked ipamChecked `json:"checked"`
}

type ipamChecked struct {
	Attachments int      `json:"attachments"`
	Pods        int      `json:"pods"` // -1: pod comparison skipped
	Nodes       []string `json:"nodes"`
}

func (a *app) ipamCommand() *cobra.Command {
	var kubeconfig string
	var coilds []string
	var port int
	check := &cobra.Command{
		Use:   "check",
		Short: "Compare the log with Kubernetes pods and with each node's kernel (exit 6 when anything disagrees)",
		Long: `Compare the log's state with what exists:

  - Kubernetes pods: an address held for a pod that no longer exists (pod_gone) or whose
    name now has another UID (pod_replaced); a running pod whose address in a Coil pool
    the log does not hold for it (pod_address_not_in_log). Skipped, and the report says
    so, without Kubernetes access.
  - each node's kernel, as its coild reports it (GET /ipam on its metrics port): veths,
    the pods' /32 and /128 routes and the export table against the node's projection.
    coild is found by --coild NODE=URL, else by the node's InternalIP (Kubernetes Node
    object) and --coild-port. A node with neither is skipped, and the report says so.

Exit 0 only when nothing disagrees; 6 when there are findings (the report is on stdout).`,
		Example: `  coilctl ipam check
  coilctl ipam check -o json --coild n1=http://10.0.0.1:9384`,
		Args: argsUsage(0, 0, "no arguments"),
		RunE: a.run(func(cmd *cobra.Command, _ []string) error {
			urls := map[string]string{}
			for _, c := range coilds {
				node, u, ok := strings.Cut(c, "=")
				if !ok || node == "" || (!strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://")) {
					return usagef("--coild %q: want NODE=http://HOST:PORT (coild's --metrics-addr)", c)
				}
				urls[node] = strings.TrimRight(u, "/")
			}
			if port <= 0 || port > 65535 {
				return usagef("--coild-port %d: want a TCP port (1-65535)", port)
			}
			cs, noKube, err := a.kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			st, err := a.load(cmd.Context())
			if err != nil {
				return err
			}
			for node := range urls {
				if !st.KnowsNode(node) {
					return errors.Wrapf(ErrNotFound, "--coild %s=...: node %q not found in the log", node, node)
				}
			}
			rep := a.ipamCheck(cmd.Context(), st, cs, noKube, urls, port)
			if err := a.printIPAM(rep); err != nil {
				return err
			}
			if !rep.Clean {
				return errors.Mark(errors.Newf("ipam check: %d findings", len(rep.Findings)), ErrFindings)
			}
			return nil
		}),
	}
	kubeFlag(check, &kubeconfig)
	check.Flags().StringSliceVar(&coilds, "coild", nil, "NODE=URL of a node's coild metrics endpoint (repeat the flag or separate with commas), e.g. n1=http://10.0.0.1:9384")
	check.Flags().IntVar(&port, "coild-port", 9384, "port of coild's metrics endpoint on a node's InternalIP, for nodes without --coild")
	return a.group("ipam", "Check the log against Kubernetes and the nodes' kernels", check)
}

// ipamCheck gathers and compares; it never fails as a whole: what cannot be asked is a
// finding (coild_unreachable, kube_unavailable) or, if not configured, skipped.
func (a *app) ipamCheck(ctx context.Context, st *snapshot, cs kubernetes.Interface, noKube string, urls map[string]string, port int) *ipamReport {
	rep := &ipamReport{Findings: []ipamcheck.Finding{}, Skipped: []string{}, Checked: ipamChecked{Pods: -1, Nodes: []string{}}}
	var held []ipamcheck.Held
	for _, name := range slices.Sorted(maps.Keys(st.Nodes)) {
		for key, asg := range st.Nodes[name].Attached {
			held = append(held, ipamcheck.Held{Node: name, ContainerID: key.ContainerID, IfName: key.IfName, Addrs: asg.Addrs,
				Pod: ipamcheck.PodRef{Namespace: asg.PodNamespace, Name: asg.PodName, UID: asg.PodUID}})
		}
	}
	rep.Checked.Attachments = len(held)
	nodeIPs := map[string]string{}
	if cs == nil {
		rep.Skipped = append(rep.Skipped, "pod comparison: "+noKube)
	} else if pods, err := a.listPods(ctx, cs, st); err != nil {
		rep.Findings = append(rep.Findings, ipamcheck.Finding{Kind: ipamcheck.KindKubeUnavailable, Detail: "pods not compared: " + err.Error()})
	} else {
		rep.Checked.Pods = len(pods)
		rep.Findings = append(rep.Findings, ipamcheck.ComparePods(held, pods)...)
		if nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
			for _, n := range nodes.Items {
				for _, ad := range n.Status.Addresses {
					if ad.Type == corev1.NodeInternalIP {
						nodeIPs[n.Name] = ad.Address
						break
					}
				}
			}
		}
	}
	for _, name := range st.NodeNames() {
		n := st.Nodes[name]
		if n == nil || n.Retired || (len(n.Attached) == 0 && !ownsBlocks(st, name)) {
			continue // nothing of it to find in a kernel
		}
		u := urls[name]
		if u == "" && nodeIPs[name] != "" {
			u = "http://" + net.JoinHostPort(nodeIPs[name], strconv.Itoa(port))
		}
		if u == "" {
			why := "no --coild " + name + "=URL"
			if cs != nil {
				why += " and no InternalIP in a Node object of that name"
			} else {
				why += " and no Kubernetes access to find its address"
			}
			rep.Skipped = append(rep.Skipped, "kernel of node "+name+": "+why)
			continue
		}
		nr, err := a.fetchNodeReport(ctx, u)
		if err != nil {
			rep.Findings = append(rep.Findings, ipamcheck.Finding{Kind: ipamcheck.KindCoildUnreachable, Node: name, Detail: err.Error()})
			continue
		}
		rep.Checked.Nodes = append(rep.Checked.Nodes, name)
		if nr.Node != name {
			rep.Findings = append(rep.Findings, ipamcheck.Finding{Kind: ipamcheck.KindCoildUnreachable, Node: name,
				Detail: fmt.Sprintf("%s is the coild of node %q, not of %q", u, nr.Node, name)})
			continue
		}
		if head := st.Head(events.NodeStream(name)).Seq; nr.Seq < head {
			rep.Findings = append(rep.Findings, ipamcheck.Finding{Kind: ipamcheck.KindCoildBehind, Node: name,
				Detail: fmt.Sprintf("coild has applied its stream up to #%d, the log is at #%d (its view is stale: a lost watch?)", nr.Seq, head)})
		}
		rep.Findings = append(rep.Findings, nr.Findings...)
	}
	ipamcheck.Sort(rep.Findings)
	rep.Clean = len(rep.Findings) == 0
	return rep
}

func ownsBlocks(st *snapshot, node string) bool {
	for _, b := range st.Pools {
		if len(b.OwnedBy(node)) > 0 {
			return true
		}
	}
	return false
}

// listPods lists every pod, with its addresses that lie in a Coil pool (the others are
// another network's: host network, another plugin).
func (a *app) listPods(ctx context.Context, cs kubernetes.Interface, st *snapshot) ([]ipamcheck.Pod, error) {
	list, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, errors.Wrap(err, "list pods")
	}
	inPool := func(ad netip.Addr) bool {
		for _, p := range st.Cluster.Pools {
			if _, _, ok := p.Locate(ad); ok {
				return true
			}
		}
		return false
	}
	out := make([]ipamcheck.Pod, 0, len(list.Items))
	for _, p := range list.Items {
		v := ipamcheck.Pod{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID), Node: p.Spec.NodeName,
			Running: p.Status.Phase == corev1.PodRunning && !p.Spec.HostNetwork}
		for _, ip := range p.Status.PodIPs {
			if ad, err := netip.ParseAddr(ip.IP); err == nil && inPool(ad.Unmap()) {
				v.IPs = append(v.IPs, ad.Unmap())
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// fetchNodeReport asks a coild for its report (GET URL/ipam), bounded by --timeout.
func (a *app) fetchNodeReport(ctx context.Context, base string) (*ipamcheck.NodeReport, error) {
	ctx, cancel := a.requestCtx(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/ipam", nil)
	if err != nil {
		return nil, errors.Wrapf(err, "coild at %s", base)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, errors.Wrapf(err, "coild at %s", base)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, errors.Newf("coild at %s: %s: %s", base, resp.Status, strings.TrimSpace(string(b)))
	}
	var nr ipamcheck.NodeReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&nr); err != nil {
		return nil, errors.Wrapf(err, "coild at %s: decode its report", base)
	}
	return &nr, nil
}

func (a *app) printIPAM(rep *ipamReport) error {
	if a.opts.output != "table" {
		return a.printValue(rep)
	}
	w := a.env.Stdout
	if len(rep.Findings) > 0 {
		t := newTable(w, "KIND", "NODE", "ADDRESS", "HOLDER", "DETAIL")
		for _, f := range rep.Findings {
			var holder []string
			if f.ContainerID != "" {
				holder = append(holder, shortID(f.ContainerID)+"/"+f.IfName)
			}
			if f.Pod != "" {
				holder = append(holder, f.Pod)
			}
			if f.Veth != "" {
				holder = append(holder, f.Veth)
			}
			t.row(f.Kind, orDash(f.Node), orDash(f.Address), orDash(strings.Join(holder, " ")), f.Detail)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	pods := "pods not compared"
	if rep.Checked.Pods >= 0 {
		pods = fmt.Sprintf("%d pods", rep.Checked.Pods)
	}
	nodes := append([]string(nil), rep.Checked.Nodes...)
	sort.Strings(nodes)
	verdict := "clean"
	if !rep.Clean {
		verdict = fmt.Sprintf("%d findings", len(rep.Findings))
	}
	fmt.Fprintf(w, "%s: %d attachments, %s, kernels of %d nodes (%s) compared\n", verdict, rep.Checked.Attachments, pods, len(nodes), orDash(strings.Join(nodes, ", ")))
	for _, s := range rep.Skipped {
		fmt.Fprintf(w, "skipped: %s\n", s)
	}
	return nil
}
