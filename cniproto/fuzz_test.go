package cniproto_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coil-net/coil/cniproto"
)

// The largest body a valid request can have. A request that passes Validate fits far
// under MaxRequestBody, so the body limit never refuses a valid request.
const maxValidBody = 32 << 10

func seedRequests(f *testing.F) {
	f.Helper()
	for _, s := range []string{
		`{"containerID":"c1","ifName":"eth0","netns":"/var/run/netns/p1"}`,
		`{"containerID":"0123456789abcdef","ifName":"eth0","netns":"/proc/1/ns/net","pool":"default",` +
			`"podNamespace":"kube-system","podName":"coredns-5d78c9869d-abcde","podUID":"8e2a1f8c-3c1d-4b7e-9a6f-0d2c4e6f8a1b"}`,
		`{"containerID":"c","ifName":"eth0","netns":"/n","prevAddrs":["10.0.0.1","fd00::1"]}`,
		`{"containerID":"../x","ifName":"eth0"}`,
		`{"containerID":"c","ifName":"a/b","netns":"rel"}`,
		`{"containerID":"c","ifName":"eth0","netns":"/n","prevAddrs":["fe80::1%eth0"]}`,
		`{"containerID":"c","ifName":"eth0","netns":"/n","podName":"A..b"}`,
		`{}`, `null`, `[]`, `{"containerID":1}`,
	} {
		f.Add([]byte(s))
	}
}

// FuzzRequestValidate: whatever JSON decodes into a Request, Validate never panics, and a
// request it accepts keeps every field within its documented bound and encodes to a
// body coild accepts.
func FuzzRequestValidate(f *testing.F) {
	seedRequests(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var r cniproto.Request
		if json.Unmarshal(body, &r) != nil {
			return
		}
		for _, op := range []string{"add", "del", "check"} {
			e := r.Validate(op)
			if e != nil {
				if e.Code != cniproto.CodeInvalidEnv && e.Code != cniproto.CodeInvalidNetworkConfig && e.Code != cniproto.CodeDecodingFailure {
					t.Fatalf("%s: code %d: %v", op, e.Code, e)
				}
				if len(e.Msg) > 512 || !utf8.ValidString(e.Msg) || strings.ContainsAny(e.Msg, "\n\r\x1b") {
					t.Fatalf("%s: unbounded or unsafe message (%d bytes): %q", op, len(e.Msg), e.Msg)
				}
				continue
			}
			if len(r.ContainerID) > cniproto.MaxContainerID || len(r.IfName) > cniproto.MaxIfName ||
				(op != "del" && (len(r.NetNS) > cniproto.MaxNetNS || len(r.PodName) > cniproto.MaxPodName ||
					len(r.PodNamespace) > cniproto.MaxPodNamespace || len(r.PodUID) > cniproto.MaxPodUID ||
					len(r.PrevAddrs) > cniproto.MaxPrevAddrs)) {
				t.Fatalf("%s: accepted a field over its bound: %+v", op, r)
			}
			if op == "del" {
				continue
			}
			b, err := json.Marshal(&r)
			if err != nil || len(b) > maxValidBody {
				t.Fatalf("%s: a valid request encodes to %d bytes (%v)", op, len(b), err)
			}
			var back cniproto.Request
			if err := json.Unmarshal(b, &back); err != nil || back.Validate(op) != nil {
				t.Fatalf("%s: a valid request does not survive its encoding: %v %v", op, err, back.Validate(op))
			}
		}
	})
}

// FuzzGCRequestValidate: a GC list is accepted only if every entry is a whole, valid
// attachment (an entry that names nothing would widen what GC releases).
func FuzzGCRequestValidate(f *testing.F) {
	for _, s := range []string{
		`{"validAttachments":[{"containerID":"c1","ifName":"eth0"}]}`,
		`{"validAttachments":[]}`, `{"validAttachments":null}`, `{}`,
		`{"validAttachments":[{"bogus":"x"}]}`, `{"validAttachments":[null]}`,
		`{"validAttachments":[{"containerID":"c1"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var g cniproto.GCRequest
		if json.Unmarshal(body, &g) != nil {
			return
		}
		e := g.Validate()
		if e != nil {
			if e.Code != cniproto.CodeInvalidNetworkConfig || len(e.Msg) > 512 {
				t.Fatalf("code %d, %d bytes: %v", e.Code, len(e.Msg), e)
			}
			return
		}
		for i, a := range g.ValidAttachments {
			if cniproto.ValidContainerID(a.ContainerID) != nil || cniproto.ValidIfName(a.IfName) != nil {
				t.Fatalf("entry %d accepted: %+v", i, a)
			}
		}
	})
}

// FuzzFieldRules: each rule accepts only what its documentation says.
func FuzzFieldRules(f *testing.F) {
	for _, s := range []string{"c1", "../x", "eth0", ".", "/var/run/netns/p", "default", "a-b.c", "x\n", "ä", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if cniproto.ValidContainerID(s) == nil {
			if s == "" || len(s) > cniproto.MaxContainerID || strings.ContainsAny(s, "/\n\x00 ") || strings.HasPrefix(s, ".") {
				t.Fatalf("container ID %q accepted", s)
			}
		}
		if cniproto.ValidIfName(s) == nil {
			if s == "" || len(s) > cniproto.MaxIfName || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n\x00") || !utf8.ValidString(s) {
				t.Fatalf("ifname %q accepted", s)
			}
		}
		if cniproto.ValidNetNS(s) == nil {
			if !strings.HasPrefix(s, "/") || len(s) > cniproto.MaxNetNS || strings.ContainsAny(s, "\n\x00\x1b") || !utf8.ValidString(s) {
				t.Fatalf("netns %q accepted", s)
			}
		}
		for name, check := range map[string]func(string) error{
			"pool": cniproto.ValidPoolName, "namespace": cniproto.ValidPodNamespace,
		} {
			if check(s) == nil {
				if s == "" || len(s) > 253 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-.") != "" {
					t.Fatalf("%s %q accepted", name, s)
				}
			}
		}
		// A pod name is the runtime's sandbox name: visible ASCII other than '/'.
		if cniproto.ValidPodName(s) == nil {
			if s == "" || len(s) > cniproto.MaxPodName || strings.ContainsRune(s, '/') ||
				strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
				t.Fatalf("pod %q accepted", s)
			}
		}
		if _, err := netip.ParseAddr(s); err == nil {
			r := cniproto.Request{ContainerID: "c", IfName: "eth0", NetNS: "/n", PrevAddrs: []netip.Addr{netip.MustParseAddr(s)}}
			if e := r.Validate("check"); e != nil && !strings.Contains(s, "%") {
				t.Fatalf("address %q refused: %v", s, e)
			}
		}
	})
}

// TestLargestValidRequest: every field at its limit, with the characters JSON escapes
// longest, still fits maxValidBody and so MaxRequestBody.
func TestLargestValidRequest(t *testing.T) {
	r := cniproto.Request{
		ContainerID:  strings.Repeat("a", cniproto.MaxContainerID),
		IfName:       strings.Repeat("<", cniproto.MaxIfName),
		NetNS:        "/" + strings.Repeat("<", cniproto.MaxNetNS-1),
		Pool:         strings.Repeat("p", 63),
		PodNamespace: strings.Repeat("n", cniproto.MaxPodNamespace),
		PodName:      strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61),
		PodUID:       strings.Repeat("u", cniproto.MaxPodUID),
	}
	for range cniproto.MaxPrevAddrs {
		r.PrevAddrs = append(r.PrevAddrs, netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
	}
	if e := r.Validate("check"); e != nil {
		t.Fatal(e)
	}
	b, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > maxValidBody || len(b) > cniproto.MaxRequestBody {
		t.Fatalf("the largest valid request takes %d bytes", len(b))
	}
	t.Logf("largest valid request: %d bytes", len(b))
}
