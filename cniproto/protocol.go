package cniproto

import (
	"context"
	"net/netip"
)

// Version is the protocol version, the first element of every request path.
const Version = "v1"

// Request paths, one per CNI operation.
const (
	PathAdd    = "/" + Version + "/add"
	PathDel    = "/" + Version + "/del"
	PathCheck  = "/" + Version + "/check"
	PathGC     = "/" + Version + "/gc"
	PathStatus = "/" + Version + "/status"
)

// MaxBody bounds the body of a gc request and of a reply; a GC list of 10k attachments
// is ~1 MiB. Other requests are bounded by MaxRequestBody (see MaxBodyFor). The server
// refuses a larger request, the client does not send one and refuses a larger reply.
const MaxBody = 8 << 20

// DefaultSocketPath is where coild listens unless configured otherwise.
const DefaultSocketPath = "/run/coild.sock"

// Request is the body of an add, del or check call.
type Request struct {
	// ContainerID and IfName identify the attachment (CNI_CONTAINERID, CNI_IFNAME).
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
	// NetNS is the pod's network namespace path (CNI_NETNS); it may be empty on DEL.
	NetNS string `json:"netns,omitempty"`
	// Pool is the netconf "pool" key; empty means coild chooses (namespace
	// annotation, else the default pool).
	Pool string `json:"pool,omitempty"`
	// MTU is the netconf "mtu" key: the MTU of both ends of the pod's veth pair; 0 means
	// coild chooses (its --mtu, else the MTU of the node's default-route interface).
	MTU int `json:"mtu,omitempty"`
	// PodNamespace, PodName and PodUID come from CNI_ARGS (K8S_POD_NAMESPACE,
	// K8S_POD_NAME, K8S_POD_UID) when the runtime passes them; otherwise empty.
	PodNamespace string `json:"podNamespace,omitempty"`
	PodName      string `json:"podName,omitempty"`
	PodUID       string `json:"podUID,omitempty"`
	// IPs are the fixed addresses the runtime asks for (runtimeConfig "ips", the CNI
	// "ips" capability), at most one per family; empty: coild chooses (or the pod's
	// annotation coil.cybozu.com/ip does). Add only.
	IPs []netip.Addr `json:"ips,omitempty"`
	// PrevAddrs is set on check only: the addresses in the runtime's prevResult.
	PrevAddrs []netip.Addr `json:"prevAddrs,omitempty"`
}

// AddResult is the reply to a successful add.
type AddResult struct {
	// HostVeth is the name of the host side of the veth pair, HostMAC its MAC address.
	HostVeth string `json:"hostVeth"`
	HostMAC  string `json:"hostMAC,omitempty"`
	// PodIfName is the interface name inside the pod (normally Request.IfName), PodMAC
	// its MAC address.
	PodIfName string `json:"podIfName"`
	PodMAC    string `json:"podMAC,omitempty"`
	// Addrs holds the pod's addresses, at most one per family.
	Addrs []netip.Addr `json:"addrs"`
	// MTU is the MTU of both ends of the veth pair (0 from an older coild: unknown).
	MTU int `json:"mtu,omitempty"`
	// Gateway4 and Gateway6 are the link-local gateways of the pod's default routes
	// (169.254.1.1 and fe80::1); the zero Addr when the pod has no address of that family.
	Gateway4 netip.Addr `json:"gateway4,omitzero"`
	Gateway6 netip.Addr `json:"gateway6,omitzero"`
}

// Attachment names one attachment of a container to the network.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// GCRequest is the body of a gc call.
type GCRequest struct {
	// ValidAttachments lists every attachment the runtime still uses. An empty list
	// means none is valid: everything may be released.
	ValidAttachments []Attachment `json:"validAttachments"`
}

// Handler serves the protocol; coild implements it. Methods are called concurrently,
// one goroutine per call (several pods start at once). Every method receives a context
// that is cancelled when the plugin gives up (its timeout) or disconnects. Return an
// *Error (see the constructors in errors.go) to choose the CNI error code the plugin
// reports; any other error is reported with CodeInternal and its message.
type Handler interface {
	// Add attaches the container: allocates an address per family and plumbs the pod.
	// It is idempotent per ContainerID+IfName: a repeated Add returns the same result
	// (the same addresses), repairing the plumbing if needed.
	Add(ctx context.Context, req *Request) (*AddResult, error)
	// Del detaches the container and releases its addresses. It is idempotent: it
	// succeeds (nil) when the attachment is unknown or the netns is already gone.
	Del(ctx context.Context, req *Request) error
	// Check verifies that the attachment exists and is plumbed as Add left it, with
	// the addresses in req.PrevAddrs. It returns an *Error with CodeUnknownContainer
	// when the attachment is unknown.
	Check(ctx context.Context, req *Request) error
	// GC releases every attachment not in req.ValidAttachments. Idempotent.
	GC(ctx context.Context, req *GCRequest) error
	// Status returns nil when coild is ready to serve Add; otherwise an error
	// (NotReady) saying why.
	Status(ctx context.Context) error
}
