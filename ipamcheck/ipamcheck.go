package ipamcheck

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Kinds of findings.
const (
	// Kernel against the node's projection (reported by coild).
	KindVethWithoutAttachment  = "veth_without_attachment"  // a Coil veth no attachment holds
	KindAttachmentWithoutVeth  = "attachment_without_veth"  // an attachment whose host veth is missing
	KindRouteWithoutAssignment = "route_without_assignment" // a pod route to an address the node does not hold
	KindRouteMissing           = "route_missing"            // an address held without its pod route
	KindRouteWrongVeth         = "route_wrong_veth"         // a pod route through another veth than its attachment's
	KindExportMissing          = "export_missing"           // a block of the node not in the export table
	KindExportExtra            = "export_extra"             // an export-table route that is not a block of the node
	// The log against Kubernetes (found by coilctl).
	KindPodGone            = "pod_gone"               // an address held for a pod that no longer exists
	KindPodReplaced        = "pod_replaced"           // an address held for a pod whose name now has another UID
	KindPodAddressNotInLog = "pod_address_not_in_log" // a running pod whose address the log does not hold for it
	// The check itself.
	KindCoildUnreachable = "coild_unreachable" // a node's coild could not be asked
	KindCoildBehind      = "coild_behind"      // a node's coild has not applied its stream's newest events
	KindKubeUnavailable  = "kube_unavailable"  // the pods could not be listed
)

// Finding is one disagreement.
type Finding struct {
	Kind        string `json:"kind"`
	Node        string `json:"node,omitempty"`
	Address     string `json:"address,omitempty"` // an address or prefix
	ContainerID string `json:"containerID,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	Pod         string `json:"pod,omitempty"` // namespace/name
	Veth        string `json:"veth,omitempty"`
	Detail      string `json:"detail"`
}

// Attachment is an attachment of the node's projection.
type Attachment struct {
	ContainerID string       `json:"containerID"`
	IfName      string       `json:"ifName"`
	Veth        string       `json:"veth"`
	Addrs       []netip.Addr `json:"addrs"`
	Pod         string       `json:"pod,omitempty"`
}

// Veth is a Coil host veth.
type Veth struct {
	Name    string `json:"name"`
	Pending bool   `json:"pending,omitempty"` // prepared by an ADD, not configured yet
}

// Route is a pod route in the host's main table.
type Route struct {
	Dst  netip.Prefix `json:"dst"`
	Link string       `json:"link"`
}

// NodeReport is what coild serves at GET /ipam on its metrics port: its kernel state,
// its projection and the findings between them.
type NodeReport struct {
	Node string `json:"node"`
	// Seq is the sequence of the node stream's last event coild has applied.
	Seq          uint64         `json:"seq"`
	Attachments  []Attachment   `json:"attachments"`
	Blocks       []netip.Prefix `json:"blocks"`
	Veths        []Veth         `json:"veths"`
	Routes       []Route        `json:"routes"`
	ExportTable  int            `json:"exportTable"`
	ExportRoutes []netip.Prefix `json:"exportRoutes"`
	Findings     []Finding      `json:"findings"`
}

// CompareKernel fills r.Findings from the rest of r. Pending veths (an ADD in progress)
// are neither missing nor extra.
func CompareKernel(r *NodeReport) {
	var out []Finding
	veths := map[string]Veth{}
	for _, v := range r.Veths {
		veths[v.Name] = v
	}
	want := map[string]bool{}
	held := map[netip.Addr]Attachment{}
	for _, a := range r.Attachments {
		want[a.Veth] = true
		for _, ad := range a.Addrs {
			held[ad] = a
		}
		if _, ok := veths[a.Veth]; !ok {
			out = append(out, Finding{Kind: KindAttachmentWithoutVeth, Node: r.Node, Address: joinAddrs(a.Addrs), ContainerID: a.ContainerID, IfName: a.IfName, Pod: a.Pod, Veth: a.Veth,
				Detail: "the log holds the address for this container, but its host veth " + a.Veth + " does not exist"})
		}
	}
	for _, v := range r.Veths {
		if !want[v.Name] && !v.Pending {
			out = append(out, Finding{Kind: KindVethWithoutAttachment, Node: r.Node, Veth: v.Name,
				Detail: "a Coil veth that no attachment of the node's log holds"})
		}
	}
	routed := map[netip.Addr]bool{}
	for _, rt := range r.Routes {
		addr := rt.Dst.Addr()
		a, ok := held[addr]
		switch {
		case !ok || !rt.Dst.IsSingleIP():
			out = append(out, Finding{Kind: KindRouteWithoutAssignment, Node: r.Node, Address: rt.Dst.String(), Veth: rt.Link,
				Detail: fmt.Sprintf("a pod route via %s to an address the node's log does not hold", orDash(rt.Link))})
		case rt.Link != a.Veth:
			routed[addr] = true // reported here, not again as missing
			out = append(out, Finding{Kind: KindRouteWrongVeth, Node: r.Node, Address: rt.Dst.String(), ContainerID: a.ContainerID, IfName: a.IfName, Pod: a.Pod, Veth: rt.Link,
				Detail: fmt.Sprintf("the route goes via %s, the attachment's veth is %s", orDash(rt.Link), a.Veth)})
		default:
			routed[addr] = true
		}
	}
	for _, a := range r.Attachments {
		if _, ok := veths[a.Veth]; !ok || veths[a.Veth].Pending {
			continue // reported above, or an ADD in progress
		}
		for _, ad := range a.Addrs {
			if !routed[ad] {
				out = append(out, Finding{Kind: KindRouteMissing, Node: r.Node, Address: ad.String(), ContainerID: a.ContainerID, IfName: a.IfName, Pod: a.Pod, Veth: a.Veth,
					Detail: "no pod route to the address through " + a.Veth})
			}
		}
	}
	blocks := map[netip.Prefix]bool{}
	for _, b := range r.Blocks {
		blocks[b] = true
	}
	exported := map[netip.Prefix]bool{}
	for _, p := range r.ExportRoutes {
		exported[p] = true
		if !blocks[p] {
			out = append(out, Finding{Kind: KindExportExtra, Node: r.Node, Address: p.String(),
				Detail: fmt.Sprintf("table %d routes a prefix that is not a block of the node", r.ExportTable)})
		}
	}
	for _, b := range r.Blocks {
		if !exported[b] {
			out = append(out, Finding{Kind: KindExportMissing, Node: r.Node, Address: b.String(),
				Detail: fmt.Sprintf("a block of the node is not in table %d (not announced over BGP)", r.ExportTable)})
		}
	}
	Sort(out)
	r.Findings = out
}

// PodRef is the pod an attachment of the log records.
type PodRef struct {
	Namespace, Name, UID string
}

// Held is an attachment of the log, for the pod comparison.
type Held struct {
	Node        string
	ContainerID string
	IfName      string
	Addrs       []netip.Addr
	Pod         PodRef
}

// Pod is a Kubernetes pod as the comparison needs it.
type Pod struct {
	Namespace, Name, UID string
	Node                 string
	IPs                  []netip.Addr
	// Running: the pod has a sandbox that should hold its addresses (phase Running, not
	// host network).
	Running bool
}

// ComparePods compares the log's attachments with the pods: an attachment whose pod
// does not exist (or exists with another UID) and a running pod that has an address the
// log does not hold for it. Attachments that record no pod are not compared.
func ComparePods(held []Held, pods []Pod) []Finding {
	var out []Finding
	byName := map[string]Pod{}
	for _, p := range pods {
		byName[p.Namespace+"/"+p.Name] = p
	}
	type owner struct {
		ns, name, uid string
	}
	holder := map[netip.Addr]owner{}
	for _, h := range held {
		for _, a := range h.Addrs {
			holder[a] = owner{h.Pod.Namespace, h.Pod.Name, h.Pod.UID}
		}
		if h.Pod.Name == "" || h.Pod.Namespace == "" {
			continue
		}
		name := h.Pod.Namespace + "/" + h.Pod.Name
		p, ok := byName[name]
		switch {
		case !ok:
			out = append(out, Finding{Kind: KindPodGone, Node: h.Node, Address: joinAddrs(h.Addrs), ContainerID: h.ContainerID, IfName: h.IfName, Pod: name,
				Detail: "the log holds the address for a pod that no longer exists (release it with coilctl address release)"})
		case h.Pod.UID != "" && p.UID != h.Pod.UID:
			out = append(out, Finding{Kind: KindPodReplaced, Node: h.Node, Address: joinAddrs(h.Addrs), ContainerID: h.ContainerID, IfName: h.IfName, Pod: name,
				Detail: fmt.Sprintf("the log holds the address for pod UID %s; the pod of that name now has UID %s", h.Pod.UID, p.UID)})
		}
	}
	for _, p := range pods {
		if !p.Running {
			continue
		}
		for _, ip := range p.IPs {
			o, ok := holder[ip]
			if ok && o.ns == p.Namespace && o.name == p.Name && (o.uid == "" || o.uid == p.UID) {
				continue
			}
			detail := "the pod's address is not held in the log"
			if ok {
				detail = fmt.Sprintf("the log holds the pod's address for another pod (%s/%s)", o.ns, o.name)
			}
			out = append(out, Finding{Kind: KindPodAddressNotInLog, Node: p.Node, Address: ip.String(), Pod: p.Namespace + "/" + p.Name, Detail: detail})
		}
	}
	Sort(out)
	return out
}

// Sort orders findings by kind, node, address, container.
func Sort(fs []Finding) {
	slices.SortFunc(fs, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Address, b.Address),
			cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.Veth, b.Veth))
	})
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
