package main

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/cniproto"
)

// maxMsg bounds the message and details of every error the plugin makes from its input:
// the runtime logs them, and a value may be megabytes.
const maxMsg = 1024

func checkError(t *testing.T, e *types.Error, codes ...uint) {
	t.Helper()
	ok := false
	for _, c := range codes {
		ok = ok || e.Code == c
	}
	if !ok {
		t.Fatalf("code %d (want one of %v): %v", e.Code, codes, e)
	}
	if len(e.Msg) > maxMsg || len(e.Details) > maxMsg {
		t.Fatalf("error of %d+%d bytes (at most %d each): %.200q", len(e.Msg), len(e.Details), maxMsg, e.Msg)
	}
	if !utf8.ValidString(e.Msg) || strings.ContainsAny(e.Msg, "\n\r\x1b") {
		t.Fatalf("unsafe message %q", e.Msg)
	}
}

// FuzzParseConfig: whatever the runtime passes on stdin, parseConfig never panics,
// refuses with a bounded message and one of codes 2, 6, 7, and what it accepts is valid.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"coil"}`,
		`{"cniVersion":"1.0.0","name":"n","type":"coil","socket":"/var/run/coil/coild.sock","pool":"blue-1","timeout":"2s","capabilities":{"x":true},"runtimeConfig":{},"dns":{},"args":{},"vendor.example/thing":1}`,
		`{"cniVersion":"1.1.0","name":"n","type":"coil","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.5/32"}]}}`,
		`{"cniVersion":"1.1.0","name":"n","type":"coil","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[{"containerID":"b","ifname":"eth1"}]}`,
		`{"name":"n","type":"coil","sokcet":"/run/x.sock"}`,
		`{"name":"n","type":"coil","ipam":{"type":"host-local"}}`,
		`{"name":"n","type":"coil","timeout":"1h"}`,
		`{"name":"n","type":"coil","cni.dev/valid-attachments":[{"bogus":"x"}]}`,
		`{"name":"n","type":"coil","x":[1,` + "\n" + `2]}`,
		`null`, `[1]`, `{"name":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, e := parseConfig(data)
		if e != nil {
			checkError(t, e, types.ErrUnsupportedField, types.ErrDecodingFailure, types.ErrInvalidNetworkConfig)
			return
		}
		if c.Name == "" || validSocket(c.Socket) != nil || c.Timeout <= 0 || c.Timeout > maxTimeout {
			t.Fatalf("accepted %+v", c)
		}
		if c.Pool != "" && cniproto.ValidPoolName(c.Pool) != nil {
			t.Fatalf("accepted pool %q", c.Pool)
		}
		if g := (&cniproto.GCRequest{ValidAttachments: c.ValidAttachments}); g.Validate() != nil {
			t.Fatalf("accepted a GC list coild refuses: %v", g.Validate())
		}
	})
}

// FuzzParseArgs: CNI_ARGS never panics the plugin; a refusal is code 4 and bounded; the
// Kubernetes keys it returns are the last values given.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
		";;", "K8S_POD_NAME", "=x", "K8S_POD_NAME=a=b", "K8S_POD_NAME=\x1b[2J",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, e := parseArgs(s)
		if e != nil {
			checkError(t, e, types.ErrInvalidEnvironmentVariables)
			return
		}
		for _, v := range []string{a.Namespace, a.Name, a.UID} {
			if !strings.Contains(s, v) || strings.Contains(v, ";") {
				t.Fatalf("%q: value %q", s, v)
			}
		}
	})
}
