package cniproto

import (
	"errors"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// The rules every request field must follow. The plugin checks them before it calls
// coild, and coild's server checks them again on every request it receives (coild is
// the trust boundary: anything that can open its socket can send anything). There is
// one copy of the rules, here; docs/cni.md lists them with the error each gets.
const (
	// MaxContainerID bounds CNI_CONTAINERID. Runtimes use 64 hex digits; cnitool
	// "cnitool-" and 20; 256 leaves room without letting one ID fill an event.
	MaxContainerID = 256
	// MaxIfName is the kernel's limit on an interface name (IFNAMSIZ - 1).
	MaxIfName = 15
	// MaxNetNS bounds CNI_NETNS (PATH_MAX - 1).
	MaxNetNS = 4095
	// MaxPodNamespace, MaxPodName and MaxPodUID bound the K8S_POD_* values of CNI_ARGS:
	// a namespace is a DNS-1123 label, a pod name a DNS-1123 subdomain, a UID a UUID (or
	// the hex hash the kubelet gives static pods).
	MaxPodNamespace = 63
	MaxPodName      = 253
	MaxPodUID       = 128
	// MaxPrevAddrs bounds the addresses a CHECK may carry.
	MaxPrevAddrs = 16
	// MaxRequestBody bounds the body of an add, del, check or status call. The largest
	// valid request (every field at its limit, a CNI_NETNS of 4095 characters that JSON
	// writes as 6 bytes each, "\u003c") is under 32 KiB (TestLargestValidRequest).
	MaxRequestBody = 64 << 10
	// MinMTU is the smallest MTU of a pod interface: 576, the datagram size every IPv4
	// host must accept (RFC 791). MinMTU6 is IPv6's minimum link MTU (RFC 8200): a pod
	// with an IPv6 address needs at least that (the kernel turns IPv6 off on a link
	// below it). MaxMTU is the largest MTU a link can have (the kernel's ETH_MAX_MTU, a
	// veth's limit).
	MinMTU  = 576
	MinMTU6 = 1280
	MaxMTU  = 65535
)

// MaxBodyFor is the largest request body coild accepts on path: MaxBody for gc (a long
// list of valid attachments), MaxRequestBody for every other call.
func MaxBodyFor(path string) int64 {
	if path == PathGC {
		return MaxBody
	}
	return MaxRequestBody
}

// Show quotes a value for an error message (Go syntax: control characters escaped), cut
// to 64 bytes (a value may be megabytes).
func Show(s string) string {
	const n = 64
	if len(s) > n {
		return strconv.Quote(s[:n]) + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return strconv.Quote(s)
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// ValidContainerID checks a container ID: the CNI spec's rule (a letter or digit, then
// letters, digits, '_', '.' or '-'; so no '/', no newline, no "..") and at most
// MaxContainerID bytes.
func ValidContainerID(id string) error {
	switch {
	case id == "":
		return errors.New("is empty")
	case len(id) > MaxContainerID:
		return fmt.Errorf("longer than %d bytes", MaxContainerID)
	case !isAlnum(id[0]):
		return errors.New("must start with a letter or a digit")
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return fmt.Errorf("%q at byte %d: use letters, digits, '_', '.' and '-'", c, i)
		}
	}
	return nil
}

// ValidIfName checks an interface name as the kernel and the CNI library do: 1 to 15
// bytes, not "." or "..", no '/', ':', white space or control character, valid UTF-8.
func ValidIfName(name string) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > MaxIfName:
		return fmt.Errorf("longer than %d bytes (the kernel's limit)", MaxIfName)
	case name == "." || name == "..":
		return errors.New("not an interface name")
	case !utf8.ValidString(name):
		return errors.New("not valid UTF-8")
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%q is not allowed (no '/', ':', white space or control characters)", r)
		}
	}
	return nil
}

// ValidNetNS checks the shape of a network namespace path: absolute, at most MaxNetNS
// bytes, valid UTF-8, no control character. (That it is a network namespace, and not
// the node's own, only coild can tell: it opens it.)
func ValidNetNS(path string) error {
	switch {
	case path == "":
		return errors.New("is empty")
	case len(path) > MaxNetNS:
		return fmt.Errorf("longer than %d bytes", MaxNetNS)
	case path[0] != '/':
		return errors.New("not an absolute path")
	case !utf8.ValidString(path):
		return errors.New("not valid UTF-8")
	}
	for _, r := range path {
		if unicode.IsControl(r) {
			return fmt.Errorf("has the control character %q", r)
		}
	}
	return nil
}

// ValidPoolName checks a pool name: a DNS-1123 subdomain of at most 63 characters (the
// rule of events.ValidName; the plugin does not import events, a test checks the two
// agree).
func ValidPoolName(name string) error {
	if name == "" {
		return errors.New("is empty")
	}
	if len(name) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			continue
		}
		if (c == '-' || c == '.') && i > 0 && i < len(name)-1 {
			continue
		}
		return errors.New("use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit")
	}
	return nil
}

// ValidMTU checks the MTU of a pod interface: a whole number from MinMTU to MaxMTU, and
// at least MinMTU6 when the pod gets an IPv6 address (ipv6: its pool has IPv6). The
// netconf "mtu", coild's --mtu and the MTU coild finds on the node (auto) follow the
// same rule.
func ValidMTU(mtu int, ipv6 bool) error {
	switch {
	case mtu > MaxMTU:
		return fmt.Errorf("above %d, the largest MTU of a link", MaxMTU)
	case ipv6 && mtu < MinMTU6:
		return fmt.Errorf("below %d, the minimum MTU of IPv6 (RFC 8200)", MinMTU6)
	case mtu < MinMTU:
		return fmt.Errorf("below %d, the minimum MTU of IPv4 (RFC 791); %d or more when the pool has IPv6", MinMTU, MinMTU6)
	}
	return nil
}

// validLabel checks a DNS-1123 label: lower-case letters, digits and '-', starting and
// ending with a letter or digit, 1 to 63 bytes.
func validLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// ValidPodNamespace checks a Kubernetes namespace name (a DNS-1123 label).
func ValidPodNamespace(ns string) error {
	if len(ns) > MaxPodNamespace {
		return fmt.Errorf("longer than %d bytes", MaxPodNamespace)
	}
	if !validLabel(ns) {
		return errors.New("not a Kubernetes namespace name (lower-case letters, digits and '-', starting and ending with a letter or digit)")
	}
	return nil
}

// ValidPodName checks a pod name: 1 to MaxPodName bytes of visible ASCII other than '/'.
// Kubernetes pod names are DNS-1123 subdomains, but the runtime passes the sandbox's
// metadata name and the CRI does not hold it to Kubernetes' rules (critest names its
// sandboxes "PodSandbox-for-create-test-UUID"); what matters to coild is that the name
// is bounded and cannot carry a path, a newline or a control character into an event or
// a log line.
func ValidPodName(name string) error {
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > MaxPodName {
		return fmt.Errorf("longer than %d bytes", MaxPodName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == '/' {
			return errors.New("not a pod name (visible ASCII other than '/')")
		}
	}
	return nil
}

// ValidPodUID checks a pod UID: 1 to MaxPodUID letters, digits, '-', '_' or '.'.
func ValidPodUID(uid string) error {
	switch {
	case uid == "":
		return errors.New("is empty")
	case len(uid) > MaxPodUID:
		return fmt.Errorf("longer than %d bytes", MaxPodUID)
	}
	for i := 0; i < len(uid); i++ {
		if c := uid[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("%q at byte %d: use letters, digits, '-', '_' and '.'", c, i)
		}
	}
	return nil
}

// FieldError formats a field's problem for an error message: "NAME is empty" or
// "invalid NAME "VALUE": REASON" (the value quoted and cut to 64 bytes).
func FieldError(name, value string, reason error) string {
	if value == "" {
		return name + " is empty"
	}
	return "invalid " + name + " " + Show(value) + ": " + reason.Error()
}

// Validate checks the fields of a request for op ("add", "del" or "check") and returns
// the first problem as an *Error with the CNI code the runtime should see: 4 (invalid
// environment variable) naming the CNI_* variable or CNI_ARGS key, 7 for the netconf's
// "pool" and "mtu", 6 for the addresses of a CHECK. An "mtu" is checked against the
// range every pod accepts (ValidMTU without IPv6); the IPv6 floor depends on the pool,
// which only coild knows. CNI_NETNS is required for add and check; the
// K8S_POD_* values are optional.
//
// A del is checked only for the two fields it uses, CNI_CONTAINERID and CNI_IFNAME (the
// attachment's name); coild ignores the others on del. The runtime sends DEL with the
// same values as the ADD, also after an ADD that was refused, and that DEL must succeed
// or the runtime retries it for ever.
func (r *Request) Validate(op string) *Error {
	for _, f := range []struct {
		name, value string
		optional    bool
		check       func(string) error
	}{
		{"CNI_CONTAINERID", r.ContainerID, false, ValidContainerID},
		{"CNI_IFNAME", r.IfName, false, ValidIfName},
		{"CNI_NETNS", r.NetNS, op == "del", ValidNetNS},
		{"CNI_ARGS K8S_POD_NAMESPACE", r.PodNamespace, true, ValidPodNamespace},
		{"CNI_ARGS K8S_POD_NAME", r.PodName, true, ValidPodName},
		{"CNI_ARGS K8S_POD_UID", r.PodUID, true, ValidPodUID},
	} {
		if (f.value == "" && f.optional) || (op == "del" && f.name != "CNI_CONTAINERID" && f.name != "CNI_IFNAME") {
			continue
		}
		if err := f.check(f.value); err != nil {
			return NewError(CodeInvalidEnv, FieldError(f.name, f.value, err), "")
		}
	}
	if op == "del" {
		return nil
	}
	if r.Pool != "" {
		if err := ValidPoolName(r.Pool); err != nil {
			return NewError(CodeInvalidNetworkConfig, FieldError(`"pool"`, r.Pool, err), "")
		}
	}
	if r.MTU != 0 {
		if err := ValidMTU(r.MTU, false); err != nil {
			return NewError(CodeInvalidNetworkConfig, fmt.Sprintf(`invalid "mtu" %d: %v`, r.MTU, err), "")
		}
	}
	if err := CheckFixedIPs(r.IPs); err != nil {
		return NewError(CodeInvalidNetworkConfig, `invalid runtimeConfig "ips": `+err.Error(), "")
	}
	if len(r.PrevAddrs) > MaxPrevAddrs {
		return NewError(CodeDecodingFailure, fmt.Sprintf("prevResult has %d addresses, more than %d", len(r.PrevAddrs), MaxPrevAddrs), "")
	}
	for _, a := range r.PrevAddrs {
		if !a.IsValid() || a.Zone() != "" {
			return NewError(CodeDecodingFailure, fmt.Sprintf("bad address %s in prevResult", Show(a.String())), "")
		}
	}
	return nil
}

// Validate checks one entry of a GC list: both fields present and valid.
func (a Attachment) Validate() error {
	if err := ValidContainerID(a.ContainerID); err != nil {
		return errors.New(FieldError("containerID", a.ContainerID, err))
	}
	if err := ValidIfName(a.IfName); err != nil {
		return errors.New(FieldError("ifname", a.IfName, err))
	}
	return nil
}

// Validate checks every entry of the list. An entry that is not a complete, valid
// attachment (containerID and ifname, both valid) fails the whole GC with code 7
// (invalid network config: the list is part of it), and nothing is released: GC releases
// what the list does not name, so a broken entry must never widen what is deleted. A nil
// list (no list: GC does nothing) and an empty one (nothing is valid) are both fine.
func (g *GCRequest) Validate() *Error {
	for i, a := range g.ValidAttachments {
		if err := a.Validate(); err != nil {
			return NewError(CodeInvalidNetworkConfig,
				fmt.Sprintf(`entry %d of "cni.dev/valid-attachments" is not a valid attachment: %v`, i, err),
				"GC refused: nothing was released")
		}
	}
	return nil
}
