package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/coil-net/coil/cniproto"
)

// pluginType is the only accepted value of the netconf "type" key.
const pluginType = "coil"

// defaultTimeout bounds one call to coild when the netconf has no "timeout". It is
// shorter than the runtimes' own CNI deadlines (kubelet's CRI calls default to 2 min;
// containerd and CRI-O use the same), so the plugin's clearer error wins the race.
const defaultTimeout = 30 * time.Second

// maxTimeout is the largest accepted "timeout".
const maxTimeout = 5 * time.Minute

// maxSocketPath is the longest socket path bind/connect accept (sun_path is 108 bytes
// with the terminating NUL).
const maxSocketPath = 107

// netConf is the validated network configuration.
type netConf struct {
	CNIVersion string
	Name       string
	Socket     string
	Pool       string // "" when absent: coild chooses
	MTU        int    // 0 when absent: coild chooses (its --mtu, else auto)
	Timeout    time.Duration
	// IPs are the fixed addresses of runtimeConfig "ips" (the "ips" capability), nil
	// when absent.
	IPs []netip.Addr
	// PrevResult is the parsed "prevResult" (CHECK, and DEL from CNI 1.0), nil if absent.
	PrevResult types.Result
	// ValidAttachments is the GC list from "cni.dev/valid-attachments" and the older
	// "cni.dev/attachments" (merged); nil when neither key is present or both are null.
	ValidAttachments []cniproto.Attachment
}

// Keys that may appear in the plugin's configuration; any other key without a '/' is
// rejected with code 2, so a typo ("sokcet") never silently falls back to a default.
// Keys with a '/' are namespaced conventions (cni.dev/..., vendor keys) and ignored.
var knownKeys = map[string]bool{
	// ours
	"socket": true, "pool": true, "timeout": true, "mtu": true,
	// CNI spec keys and what runtimes inject
	"cniVersion": true, "cniVersions": true, "name": true, "type": true,
	"disableCheck": true, "disableGC": true, "capabilities": true, "runtimeConfig": true,
	"args": true, "dns": true, "prevResult": true,
	"cni.dev/valid-attachments": true, "cni.dev/attachments": true,
}

// parseConfig decodes and validates the netconf the runtime passes on stdin. Errors
// are *types.Error: code 6 when it is not JSON (or prevResult cannot be parsed),
// code 2 for an unsupported key, code 7 for an invalid value.
func parseConfig(data []byte) (*netConf, *types.Error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network config is not valid JSON", bound(err.Error()))
	}
	if raw == nil {
		return nil, types.NewError(types.ErrDecodingFailure, "network config is not a JSON object", string(data))
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case k == "ipam":
			return nil, types.NewError(types.ErrUnsupportedField,
				fmt.Sprintf("unsupported field \"ipam\" = %s: coil allocates addresses itself (through coild); remove \"ipam\"", showRaw(raw[k])), "")
		case !knownKeys[k] && !strings.Contains(k, "/"):
			return nil, types.NewError(types.ErrUnsupportedField,
				fmt.Sprintf("unsupported field %s = %s in network config (coil knows \"socket\", \"pool\", \"timeout\", \"mtu\")", cniproto.Show(k), showRaw(raw[k])), "")
		}
	}

	c := &netConf{Socket: cniproto.DefaultSocketPath, Timeout: defaultTimeout}
	str := func(key string, dst *string) *types.Error {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("%q must be a string, got %s", key, showRaw(v)), "")
		}
		return nil
	}
	var typ, socket, timeout string
	for _, f := range []struct {
		key string
		dst *string
	}{{"cniVersion", &c.CNIVersion}, {"name", &c.Name}, {"type", &typ}, {"socket", &socket}, {"pool", &c.Pool}, {"timeout", &timeout}} {
		if e := str(f.key, f.dst); e != nil {
			return nil, e
		}
	}
	if c.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "missing network name (\"name\")", "")
	}
	if typ != pluginType {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("\"type\" is %s, want %q", cniproto.Show(typ), pluginType), "")
	}
	if _, ok := raw["socket"]; ok {
		if e := validSocket(socket); e != nil {
			return nil, e
		}
		c.Socket = socket
	}
	if _, ok := raw["pool"]; ok && c.Pool != "" {
		if err := cniproto.ValidPoolName(c.Pool); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, cniproto.FieldError(`"pool"`, c.Pool, err), "")
		}
	}
	if v, ok := raw["mtu"]; ok && string(v) != "null" {
		mtu, e := parseMTU(v)
		if e != nil {
			return nil, e
		}
		c.MTU = mtu
	}
	if _, ok := raw["timeout"]; ok {
		d, err := time.ParseDuration(timeout)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("invalid \"timeout\" %s: want a Go duration such as \"10s\"", cniproto.Show(timeout)), "")
		}
		if d <= 0 || d > maxTimeout {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("invalid \"timeout\" %s: must be more than 0 and at most %s", cniproto.Show(timeout), maxTimeout), "")
		}
		c.Timeout = d
	}
	if v, ok := raw["runtimeConfig"]; ok && string(v) != "null" {
		ips, e := parseRuntimeIPs(v)
		if e != nil {
			return nil, e
		}
		c.IPs = ips
	}
	if v, ok := raw["prevResult"]; ok && string(v) != "null" {
		pc := types.PluginConf{CNIVersion: c.CNIVersion}
		if err := json.Unmarshal(v, &pc.RawPrevResult); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "\"prevResult\" is not a JSON object", bound(err.Error()))
		}
		if err := version.ParsePrevResult(&pc); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "cannot parse \"prevResult\"", bound(err.Error()))
		}
		c.PrevResult = pc.PrevResult
	}
	for _, key := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			continue
		}
		var list []types.GCAttachment
		if err := json.Unmarshal(v, &list); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("cannot parse %q", key), bound(err.Error()))
		}
		// GC releases what the list does not name: an entry that is not a whole, valid
		// attachment ({"bogus":"x"}, null, a containerID without ifname) fails the GC
		// rather than widen what is released.
		for i, g := range list {
			if err := (cniproto.Attachment{ContainerID: g.ContainerID, IfName: g.IfName}).Validate(); err != nil {
				return nil, types.NewError(types.ErrInvalidNetworkConfig,
					fmt.Sprintf("entry %d of %q is not a valid attachment: %v", i, key, err), "GC refused: nothing was released")
			}
		}
		if c.ValidAttachments == nil {
			c.ValidAttachments = []cniproto.Attachment{}
		}
		c.ValidAttachments = mergeAttachments(c.ValidAttachments, list)
	}
	return c, nil
}

// parseRuntimeIPs reads "ips" from runtimeConfig (libcni puts it there when the
// conflist declares the capability {"ips": true} and the runtime passes it): a list of
// addresses, plain or in CIDR form (CNI CONVENTIONS), at most one per family. Other
// runtimeConfig keys are not coil's and are ignored.
func parseRuntimeIPs(v json.RawMessage) ([]netip.Addr, *types.Error) {
	var rc map[string]json.RawMessage
	if err := json.Unmarshal(v, &rc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "\"runtimeConfig\" is not a JSON object", bound(err.Error()))
	}
	raw, ok := rc["ips"]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("runtimeConfig \"ips\" must be a list of strings, got %s", showRaw(raw)), "")
	}
	if len(list) == 0 {
		return nil, nil
	}
	ips, err := cniproto.ParseFixedIPs(list)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "invalid runtimeConfig \"ips\": "+err.Error(), "")
	}
	return ips, nil
}

// maxShown bounds how much of a value an error message quotes: a value may be megabytes,
// and the runtime logs every message.
const maxShown = 64

// showRaw is a JSON value for an error message: compacted (no line breaks) and cut to
// maxShown bytes.
func showRaw(v json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil || !utf8.Valid(b.Bytes()) {
		return cniproto.Show(string(v))
	}
	if b.Len() <= maxShown {
		return b.String()
	}
	cut := maxShown
	for cut > 0 && !utf8.RuneStart(b.Bytes()[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", b.Bytes()[:cut], b.Len())
}

// bound cuts a library's error text (which may quote input) to 512 bytes.
func bound(s string) string {
	const n = 512
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("... (%d bytes)", len(s))
}

// parseMTU reads the "mtu" key: a JSON number written as a whole number (not 1500.0,
// not 1.5e3, not "1500"), within the range every pod accepts (cniproto.ValidMTU; coild
// checks the IPv6 minimum against the pool).
func parseMTU(v json.RawMessage) (int, *types.Error) {
	s := strings.TrimSpace(string(v))
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return 0, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("\"mtu\" must be a number, got %s", showRaw(v)), "")
	}
	mtu, err := strconv.Atoi(s)
	if err != nil {
		return 0, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("invalid \"mtu\" %s: want a whole number of bytes, %d-%d (%d or more when the pool has IPv6)", showRaw(v), cniproto.MinMTU, cniproto.MaxMTU, cniproto.MinMTU6), "")
	}
	if err := cniproto.ValidMTU(mtu, false); err != nil {
		return 0, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid \"mtu\" %d: %v", mtu, err), "")
	}
	return mtu, nil
}

func validSocket(p string) *types.Error {
	bad := func(why string) *types.Error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid \"socket\" %s: %s", cniproto.Show(p), why), "")
	}
	switch {
	case p == "":
		return bad("empty (omit the key for the default " + cniproto.DefaultSocketPath + ")")
	case !filepath.IsAbs(p):
		return bad("must be an absolute path")
	case filepath.Clean(p) != p || strings.HasSuffix(p, "/"):
		return bad(fmt.Sprintf("not a clean path (did you mean %s?)", cniproto.Show(filepath.Clean(p))))
	case len(p) > maxSocketPath:
		return bad(fmt.Sprintf("longer than %d bytes, the limit of a UNIX socket path", maxSocketPath))
	}
	return nil
}

func mergeAttachments(dst []cniproto.Attachment, src []types.GCAttachment) []cniproto.Attachment {
	seen := make(map[cniproto.Attachment]bool, len(dst))
	for _, a := range dst {
		seen[a] = true
	}
	for _, g := range src {
		a := cniproto.Attachment{ContainerID: g.ContainerID, IfName: g.IfName}
		if !seen[a] {
			seen[a] = true
			dst = append(dst, a)
		}
	}
	return dst
}

// podArgs are the Kubernetes keys of CNI_ARGS.
type podArgs struct {
	Namespace, Name, UID string
}

// parseArgs reads CNI_ARGS ("K=V;K=V"). Unknown keys are ignored; a pair without '='
// is code 4.
func parseArgs(s string) (podArgs, *types.Error) {
	var a podArgs
	if s == "" {
		return a, nil
	}
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return a, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("CNI_ARGS: %s is not KEY=VALUE", cniproto.Show(kv)), cniproto.Show(s))
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_UID":
			a.UID = v
		}
	}
	return a, nil
}
