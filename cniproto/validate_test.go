package cniproto_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/utils"
	"pgregory.net/rapid"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
)

func TestValidContainerID(t *testing.T) {
	for _, ok := range []string{"a", "0", "cafe0001", strings.Repeat("f", 64), "cnitool-0123456789abcdef0123", "A_b.c-d",
		strings.Repeat("a", cniproto.MaxContainerID)} {
		if err := cniproto.ValidContainerID(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../x", "..", ".a", "-a", "_a", "a/b", "a\nb", "a b", "a\x00", "a;b", "ä",
		strings.Repeat("a", cniproto.MaxContainerID+1)} {
		if err := cniproto.ValidContainerID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestContainerIDAgreesWithCNI: below the length bound, coil's rule is the CNI library's
// (the one skel applies to CNI_CONTAINERID in the plugin).
func TestContainerIDAgreesWithCNI(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		id := rapid.StringMatching(`[a-zA-Z0-9_.\-/ \n:;äA]{0,20}`).Draw(rt, "id")
		ours, theirs := cniproto.ValidContainerID(id) == nil, utils.ValidateContainerID(id) == nil
		if ours != theirs {
			rt.Fatalf("container ID %q: coil says valid=%v, the CNI library %v", id, ours, theirs)
		}
	})
}

func TestValidIfName(t *testing.T) {
	for _, ok := range []string{"eth0", "net1", "a", strings.Repeat("e", 15), "é1"} {
		if err := cniproto.ValidIfName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
		if utils.ValidateInterfaceName(ok) != nil {
			t.Errorf("%q refused by the CNI library: coil must not accept less", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a:b", "a b", "eth0\n", "a\tb", "a\x00b", "a\x7f",
		strings.Repeat("e", 16), "\xff"} {
		if err := cniproto.ValidIfName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidNetNS(t *testing.T) {
	for _, ok := range []string{"/var/run/netns/cni-1234", "/proc/123/ns/net", "/run/netns/a b"} {
		if err := cniproto.ValidNetNS(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "var/run/netns/x", "./x", "/x\n", "/x\x00", "/\xff", "/" + strings.Repeat("a", cniproto.MaxNetNS)} {
		if err := cniproto.ValidNetNS(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidPodArgs(t *testing.T) {
	for _, ns := range []string{"default", "kube-system", "a", strings.Repeat("a", 63)} {
		if err := cniproto.ValidPodNamespace(ns); err != nil {
			t.Errorf("namespace %q refused: %v", ns, err)
		}
	}
	for _, ns := range []string{"../kube-system", "Default", "a.b", "-a", "a-", strings.Repeat("a", 64), "a\nb"} {
		if err := cniproto.ValidPodNamespace(ns); err == nil {
			t.Errorf("namespace %q accepted", ns)
		}
	}
	for _, n := range []string{"web-0", "a.b.c", "x", strings.Repeat("a", 63) + "." + strings.Repeat("b", 63), "PodSandbox-for-create-test-bea29371-0bbc-47ab-96db-1dc380e55dc7"} {
		if err := cniproto.ValidPodName(n); err != nil {
			t.Errorf("pod name %q refused: %v", n, err)
		}
	}
	for _, n := range []string{"", "a/b", "../x", "a\nb", "a b", "a\x00", "\xff", strings.Repeat("a", cniproto.MaxPodName+1)} {
		if err := cniproto.ValidPodName(n); err == nil {
			t.Errorf("pod name %q accepted", n)
		}
	}
	for _, u := range []string{"0b5f3c3e-9b8e-4f65-a3c4-3d2f5a6b7c8d", "d41d8cd98f00b204e9800998ecf8427e", "u"} {
		if err := cniproto.ValidPodUID(u); err != nil {
			t.Errorf("UID %q refused: %v", u, err)
		}
	}
	for _, u := range []string{"", "a/b", "a b", "a\n", strings.Repeat("a", cniproto.MaxPodUID+1)} {
		if err := cniproto.ValidPodUID(u); err == nil {
			t.Errorf("UID %q accepted", u)
		}
	}
}

func TestPoolNameAgreesWithEvents(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.StringMatching(`[a-zA-Z0-9._\- ä]{0,70}`).Draw(rt, "name")
		ours, theirs := cniproto.ValidPoolName(n) == nil, events.ValidName(n) == nil
		if ours != theirs {
			rt.Fatalf("pool name %q: cniproto says valid=%v, events.ValidName %v", n, ours, theirs)
		}
	})
}

func TestRequestValidate(t *testing.T) {
	good := cniproto.Request{ContainerID: "cafe0001", IfName: "eth0", NetNS: "/var/run/netns/p", Pool: "blue",
		PodNamespace: "default", PodName: "web-0", PodUID: "0b5f3c3e-9b8e-4f65-a3c4-3d2f5a6b7c8d",
		PrevAddrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}
	for _, op := range []string{"add", "check", "del"} {
		if e := good.Validate(op); e != nil {
			t.Errorf("%s of a good request: %v", op, e)
		}
	}
	huge := strings.Repeat("a", 1<<20)
	for _, tc := range []struct {
		name string
		edit func(*cniproto.Request)
		op   string
		code uint
		msg  string
	}{
		{"dot-dot container ID", func(r *cniproto.Request) { r.ContainerID = "../../etc" }, "add", 4, `invalid CNI_CONTAINERID "../../etc": must start with a letter or a digit`},
		{"newline in container ID", func(r *cniproto.Request) { r.ContainerID = "a\nb" }, "del", 4, `invalid CNI_CONTAINERID "a\nb": '\n' at byte 1`},
		{"huge container ID", func(r *cniproto.Request) { r.ContainerID = huge }, "add", 4, `... (1048576 bytes): longer than 256 bytes`},
		{"no container ID", func(r *cniproto.Request) { r.ContainerID = "" }, "del", 4, "CNI_CONTAINERID is empty"},
		{"no ifname", func(r *cniproto.Request) { r.IfName = "" }, "del", 4, "CNI_IFNAME is empty"},
		{"ifname with slash", func(r *cniproto.Request) { r.IfName = "../eth0" }, "add", 4, `invalid CNI_IFNAME "../eth0": '/' is not allowed`},
		{"no netns", func(r *cniproto.Request) { r.NetNS = "" }, "add", 4, "CNI_NETNS is empty"},
		{"no netns on check", func(r *cniproto.Request) { r.NetNS = "" }, "check", 4, "CNI_NETNS is empty"},
		{"relative netns", func(r *cniproto.Request) { r.NetNS = "netns/p" }, "add", 4, `invalid CNI_NETNS "netns/p": not an absolute path`},
		{"huge netns", func(r *cniproto.Request) { r.NetNS = "/" + huge }, "check", 4, "longer than 4095 bytes"},
		{"bad pool", func(r *cniproto.Request) { r.Pool = "Blue" }, "add", 7, `invalid "pool" "Blue"`},
		{"mtu below IPv4's minimum", func(r *cniproto.Request) { r.MTU = 575 }, "add", 7, `invalid "mtu" 575: below 576, the minimum MTU of IPv4`},
		{"negative mtu", func(r *cniproto.Request) { r.MTU = -1 }, "check", 7, `invalid "mtu" -1: below 576`},
		{"mtu above a link's", func(r *cniproto.Request) { r.MTU = 65536 }, "add", 7, `invalid "mtu" 65536: above 65535, the largest MTU of a link`},
		{"bad namespace", func(r *cniproto.Request) { r.PodNamespace = "../kube-system" }, "add", 4, `invalid CNI_ARGS K8S_POD_NAMESPACE "../kube-system"`},
		{"huge pod name", func(r *cniproto.Request) { r.PodName = huge }, "add", 4, "invalid CNI_ARGS K8S_POD_NAME"},
		{"bad UID", func(r *cniproto.Request) { r.PodUID = "a b" }, "check", 4, `invalid CNI_ARGS K8S_POD_UID "a b"`},
		{"many addresses", func(r *cniproto.Request) { r.PrevAddrs = make([]netip.Addr, 17) }, "check", 6, "more than 16"},
		{"zero address", func(r *cniproto.Request) { r.PrevAddrs = []netip.Addr{{}} }, "check", 6, "bad address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.edit(&r)
			e := r.Validate(tc.op)
			if e == nil || e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) {
				t.Fatalf("got %v, want code %d with %q", e, tc.code, tc.msg)
			}
			if len(e.Error()) > 400 {
				t.Errorf("message of %d bytes: a value must be cut, not echoed whole", len(e.Error()))
			}
		})
	}
	// A DEL is checked only for the attachment's name: it must succeed after an ADD
	// refused for any other field.
	r := good
	r.NetNS, r.Pool, r.PodNamespace, r.PodName, r.PodUID, r.MTU = "relative", "Bad", "../x", "A", "a b", 1
	if e := r.Validate("del"); e != nil {
		t.Errorf("del refused for a field it does not use: %v", e)
	}
}

func TestValidMTU(t *testing.T) {
	for _, tc := range []struct {
		mtu  int
		ipv6 bool
		err  string
	}{
		{576, false, ""}, {1500, true, ""}, {1280, true, ""}, {9000, false, ""}, {65535, true, ""},
		{575, false, "below 576, the minimum MTU of IPv4 (RFC 791); 1280 or more when the pool has IPv6"},
		{0, false, "below 576"},
		{1279, true, "below 1280, the minimum MTU of IPv6 (RFC 8200)"},
		{576, true, "below 1280"},
		{65536, false, "above 65535, the largest MTU of a link"},
		{1 << 40, true, "above 65535"},
	} {
		err := cniproto.ValidMTU(tc.mtu, tc.ipv6)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ValidMTU(%d, ipv6=%v) = %v, want %q", tc.mtu, tc.ipv6, err, tc.err)
		}
	}
}

func TestGCRequestValidate(t *testing.T) {
	for _, list := range []string{`null`, `[]`, `[{"containerID":"a","ifName":"eth0"},{"containerID":"b","ifname":"net1","extra":1}]`} {
		var g cniproto.GCRequest
		if err := json.Unmarshal([]byte(`{"validAttachments":`+list+`}`), &g); err != nil {
			t.Fatal(err)
		}
		if e := g.Validate(); e != nil {
			t.Errorf("%s refused: %v", list, e)
		}
	}
	for list, msg := range map[string]string{
		`[{"bogus":"x"}]`: "entry 0 of \"cni.dev/valid-attachments\" is not a valid attachment: containerID is empty",
		`[{"containerID":"a","ifName":"eth0"},null]`: "entry 1 ",
		`[{"containerID":"a"}]`:                      "ifname is empty",
		`[{"ifName":"eth0"}]`:                        "containerID is empty",
		`[{"containerID":"../a","ifName":"eth0"}]`:   `invalid containerID "../a"`,
		`[{"containerID":"a","ifName":"eth0\n"}]`:    `invalid ifname "eth0\n"`,
	} {
		var g cniproto.GCRequest
		if err := json.Unmarshal([]byte(`{"validAttachments":`+list+`}`), &g); err != nil {
			t.Fatal(err)
		}
		e := g.Validate()
		if e == nil || e.Code != cniproto.CodeInvalidNetworkConfig || !strings.Contains(e.Msg, msg) || !strings.Contains(e.Details, "nothing was released") {
			t.Errorf("%s: got %v, want code 7 with %q", list, e, msg)
		}
	}
}

// TestValidateNeverPanics: any bytes, any size, in any field: Validate answers, and
// what it accepts is within the bounds events can store.
func TestValidateNeverPanics(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		field := func(name string) string {
			if rapid.Bool().Draw(rt, name+"-big") {
				return strings.Repeat(rapid.String().Draw(rt, name+"-unit"), rapid.IntRange(0, 5000).Draw(rt, name+"-times"))
			}
			return string(rapid.SliceOf(rapid.Byte()).Draw(rt, name))
		}
		r := cniproto.Request{ContainerID: field("id"), IfName: field("if"), NetNS: field("ns"), Pool: field("pool"),
			PodNamespace: field("pns"), PodName: field("pn"), PodUID: field("uid")}
		op := rapid.SampledFrom([]string{"add", "del", "check"}).Draw(rt, "op")
		if e := r.Validate(op); e == nil {
			for _, s := range []string{r.ContainerID, r.IfName, r.NetNS, r.PodNamespace, r.PodName, r.PodUID} {
				if op != "del" && (!utf8.ValidString(s) || len(s) > cniproto.MaxNetNS) {
					rt.Fatalf("accepted %q", s)
				}
			}
			if strings.ContainsAny(r.ContainerID, "/\n") || len(r.ContainerID) > cniproto.MaxContainerID {
				rt.Fatalf("accepted container ID %q", r.ContainerID)
			}
		}
	})
}
