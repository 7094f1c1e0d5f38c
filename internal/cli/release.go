package cli

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/errors"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/coil-net/coil/kube"
	"github.com/coil-net/coil/projection"
)

// kubeFlag adds --kubeconfig to a command that asks Kubernetes about pods.
func kubeFlag(c *cobra.Command, path *string) {
	c.Flags().StringVar(path, "kubeconfig", "",
		"kubeconfig file for the Kubernetes API (default: $KUBECONFIG, else ~/.kube/config if it exists, else the in-cluster configuration when run in a pod)")
}

// kubeClient connects to Kubernetes: --kubeconfig, else $KUBECONFIG (its first file),
// else ~/.kube/config when it exists, else the in-cluster configuration. Without any it
// returns a nil client and why (Kubernetes checks are then skipped or refused, as each
// command documents). An unusable kubeconfig is a usage error.
func (a *app) kubeClient(flag string) (kubernetes.Interface, string, error) {
	path, from := flag, "--kubeconfig"
	if path == "" {
		if env := a.env.Getenv("KUBECONFIG"); env != "" {
			path, from = strings.Split(env, string(os.PathListSeparator))[0], "$KUBECONFIG"
		} else if home := a.env.Getenv("HOME"); home != "" {
			if p := filepath.Join(home, ".kube", "config"); fileExists(p) {
				path, from = p, "~/.kube/config"
			}
		}
	}
	rc, err := kube.RESTConfig(path)
	if errors.Is(err, kube.ErrDisabled) {
		return nil, "no Kubernetes access (no --kubeconfig, no $KUBECONFIG, no ~/.kube/config, not in a pod)", nil
	}
	if err != nil {
		return nil, "", errors.Mark(errors.Wrapf(err, "%s", from), ErrUsage)
	}
	rc.Timeout = a.opts.timeout
	cs, err := kube.NewClient(rc, "coilctl")
	if err != nil {
		return nil, "", errors.Mark(err, ErrUsage)
	}
	return cs, "", nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// releaseView is what `address release` prints as JSON/YAML.
type releaseView struct {
	Address      netip.Addr   `json:"address"`
	Addrs        []netip.Addr `json:"addrs"`
	Node         string       `json:"node"`
	Pool         string       `json:"pool"`
	BlockIndex   uint64       `json:"blockIndex"`
	ContainerID  string       `json:"containerID"`
	IfName       string       `json:"ifName"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
	PodCheck     string       `json:"podCheck"` // gone, replaced, exists, unknown, no-pod
	Forced       bool         `json:"forced"`
	Reason       string       `json:"reason"`
}

// holder finds the attachment holding addr: its node, key and assignment.
func (s *snapshot) holder(addr netip.Addr) (string, projection.AttachKey, *projection.Assignment, bool) {
	for name, n := range s.Nodes {
		if key, ok := n.Held[addr]; ok {
			return name, key, n.Attached[key], true
		}
	}
	return "", projection.AttachKey{}, nil, false
}

// podVerdict says whether the pod an attachment records still exists: the state for
// JSON, a sentence, and whether a release must be refused without --force.
func (a *app) podVerdict(ctx context.Context, cs kubernetes.Interface, noKube string, asg *projection.Assignment) (state, why string, refuse bool) {
	ref := kube.PodRef{Namespace: asg.PodNamespace, Name: asg.PodName, UID: asg.PodUID}
	switch {
	case asg.PodName == "" || asg.PodNamespace == "":
		return "no-pod", "the attachment records no pod (it was not made for a Kubernetes pod), so coilctl cannot tell whether its container still exists", true
	case cs == nil:
		return "unknown", noKube + ": coilctl cannot tell whether pod " + ref.String() + " still exists", true
	}
	st, uid, err := kube.LookupPod(ctx, cs, ref)
	switch {
	case err != nil:
		return "unknown", fmt.Sprintf("coilctl cannot tell whether pod %s still exists: %v", ref, err), true
	case st == kube.PodExists:
		return string(st), "pod " + ref.String() + " still exists", true
	case st == kube.PodReplaced:
		return string(st), fmt.Sprintf("pod %s is gone (a new pod of that name has UID %s)", ref, uid), false
	}
	return string(st), "pod " + ref.String() + " no longer exists", false
}

func (a *app) addressReleaseCommand() *cobra.Command {
	var reason, kubeconfig string
	var force, yes bool
	c := &cobra.Command{
		Use:   "release ADDRESS --reason TEXT",
		Short: "Release an address whose pod is gone (refused while its pod exists, unless --force; asks for confirmation)",
		Long: `Release the attachment that holds ADDRESS (all its addresses: both families of a
dual-stack pod), appending AddressReleased with --reason to its node's stream. The
node's coild, alive or not, drops it: it deletes the container's veth and /32 route
and may hand the address out again.

Refused (exit 4) while the pod recorded in the AddressAssigned event still exists (same
namespace, name and UID, asked of the Kubernetes API), and also when coilctl cannot tell:
no Kubernetes access, the API server not answering, or an attachment that records no pod.
--force releases anyway and records why in the event's reason ("forced (...): TEXT");
a pod that still runs loses its network.
On a terminal coilctl shows what it will release and asks for confirmation; in scripts
pass --yes (without a terminal and without --yes: exit 2, nothing changed).`,
		Example: `  coilctl address release 10.64.3.7 --reason "pod deleted while its node was partitioned"
  coilctl address release 10.64.3.7 --reason "container gone" --force --yes`,
		Args: argsUsage(1, 1, "one ADDRESS"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			addr, err := parseAddrArg(args[0])
			if err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: say why the address is released (it is recorded in the AddressReleased event)")
			}
			if err = a.needConfirm(cmd, yes, fmt.Sprintf("release address %s (every address of its attachment)", addr)); err != nil {
				return err
			}
			cs, noKube, err := a.kubeClient(kubeconfig)
			if err != nil {
				return err
			}
			st, err := a.load(cmd.Context())
			if err != nil {
				return err
			}
			node, key, asg, ok := st.holder(addr)
			if !ok {
				return errors.Wrapf(ErrNotFound, "address %s is free (%s)", addr, st.whereIs(addr))
			}
			holder := fmt.Sprintf("container %s, interface %s", key.ContainerID, key.IfName)
			if asg.PodName != "" {
				holder += ", pod " + podName(asg.PodNamespace, asg.PodName)
			}
			state, why, refuse := a.podVerdict(cmd.Context(), cs, noKube, asg)
			recorded := reason
			if refuse {
				if !force {
					return errors.Wrapf(ErrRefused, "address %s is held on node %s by %s, and %s: release it once its pod is gone, or pass --force (a pod that still runs loses its network)",
						addr, node, holder, why)
				}
				recorded = "forced (" + why + "): " + reason
			}
			plan := fmt.Sprintf("Release %s on node %s: %s, since %s.\n", joinAddrs(asg.Addrs), node, holder, fmtTime(asg.Since))
			if refuse {
				plan += "--force: " + why + "; if the pod still runs, it loses its network.\n"
			} else {
				plan += "Checked: " + why + ".\n"
			}
			plan += "The node's coild deletes the container's veth and route; the address can then be handed out again."
			if err = a.confirm(cmd.Context(), yes, plan, fmt.Sprintf("address %s was not released", addr)); err != nil {
				return err
			}
			res, err := a.admin().ReleaseAddress(cmd.Context(), node, addr, asg.Seq, recorded)
			if err != nil {
				return err
			}
			v := releaseView{
				Address: addr, Addrs: res.Addrs, Node: res.Node, Pool: res.Pool, BlockIndex: res.Block,
				ContainerID: res.ContainerID, IfName: res.IfName,
				PodNamespace: res.PodNamespace, PodName: res.PodName, PodUID: res.PodUID,
				PodCheck: state, Forced: refuse, Reason: recorded,
			}
			if a.opts.output != "table" {
				return a.printValue(v)
			}
			_, err = fmt.Fprintf(a.env.Stdout, "released %s on node %s (%s)\n", joinAddrs(res.Addrs), node, holder)
			return errors.Wrap(err, "write output")
		}),
	}
	c.Flags().StringVar(&reason, "reason", "", "why (required); recorded in the AddressReleased event")
	c.Flags().BoolVar(&force, "force", false, "release even though the pod exists or coilctl cannot tell (recorded in the reason)")
	kubeFlag(c, &kubeconfig)
	yesFlag(c, &yes)
	return c
}
