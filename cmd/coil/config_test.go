package main

import (
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
)

func TestParseConfigDefaults(t *testing.T) {
	c, e := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"coil"}`))
	if e != nil {
		t.Fatal(e)
	}
	if c.Socket != cniproto.DefaultSocketPath || c.Timeout != defaultTimeout || c.Pool != "" || c.MTU != 0 ||
		c.Name != "k8s-pod-network" || c.CNIVersion != "1.1.0" || c.PrevResult != nil || c.ValidAttachments != nil {
		t.Fatalf("%+v", c)
	}
}

func TestParseConfigAllKeys(t *testing.T) {
	c, e := parseConfig([]byte(`{"cniVersion":"1.0.0","name":"n","type":"coil","socket":"/var/run/coil/coild.sock",
		"pool":"blue-1","timeout":"2s","mtu":9000,"capabilities":{"x":true},"runtimeConfig":{},"dns":{},"args":{},
		"vendor.example/thing":1}`))
	if e != nil {
		t.Fatal(e)
	}
	if c.Socket != "/var/run/coil/coild.sock" || c.Pool != "blue-1" || c.Timeout != 2*time.Second || c.MTU != 9000 {
		t.Fatalf("%+v", c)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		code       uint
		msg        string // a substring of Msg
	}{
		{"not json", `{"name":`, types.ErrDecodingFailure, "not valid JSON"},
		{"not object", `null`, types.ErrDecodingFailure, "not a JSON object"},
		{"array", `[1]`, types.ErrDecodingFailure, "not valid JSON"},
		{"missing name", `{"cniVersion":"1.1.0","type":"coil"}`, types.ErrInvalidNetworkConfig, `missing network name`},
		{"wrong type", `{"name":"n","type":"ptp"}`, types.ErrInvalidNetworkConfig, `"type" is "ptp", want "coil"`},
		{"missing type", `{"name":"n"}`, types.ErrInvalidNetworkConfig, `"type" is "", want "coil"`},
		{"type not string", `{"name":"n","type":1}`, types.ErrInvalidNetworkConfig, `"type" must be a string, got 1`},
		{"relative socket", `{"name":"n","type":"coil","socket":"run/coild.sock"}`, types.ErrInvalidNetworkConfig, `"socket" "run/coild.sock": must be an absolute path`},
		{"empty socket", `{"name":"n","type":"coil","socket":""}`, types.ErrInvalidNetworkConfig, `invalid "socket" "": empty`},
		{"unclean socket", `{"name":"n","type":"coil","socket":"/run//coild.sock"}`, types.ErrInvalidNetworkConfig, `did you mean "/run/coild.sock"`},
		{"long socket", `{"name":"n","type":"coil","socket":"/` + strings.Repeat("a", 107) + `"}`, types.ErrInvalidNetworkConfig, "longer than 107 bytes"},
		{"socket number", `{"name":"n","type":"coil","socket":5}`, types.ErrInvalidNetworkConfig, `"socket" must be a string, got 5`},
		{"bad timeout", `{"name":"n","type":"coil","timeout":"banana"}`, types.ErrInvalidNetworkConfig, `invalid "timeout" "banana"`},
		{"number timeout", `{"name":"n","type":"coil","timeout":10}`, types.ErrInvalidNetworkConfig, `"timeout" must be a string, got 10`},
		{"zero timeout", `{"name":"n","type":"coil","timeout":"0s"}`, types.ErrInvalidNetworkConfig, "must be more than 0"},
		{"huge timeout", `{"name":"n","type":"coil","timeout":"1h"}`, types.ErrInvalidNetworkConfig, "at most 5m0s"},
		{"bad pool", `{"name":"n","type":"coil","pool":"Blue"}`, types.ErrInvalidNetworkConfig, `invalid "pool"`},
		{"mtu below IPv4's minimum", `{"name":"n","type":"coil","mtu":575}`, types.ErrInvalidNetworkConfig, `invalid "mtu" 575: below 576, the minimum MTU of IPv4 (RFC 791); 1280 or more when the pool has IPv6`},
		{"mtu zero", `{"name":"n","type":"coil","mtu":0}`, types.ErrInvalidNetworkConfig, `invalid "mtu" 0: below 576`},
		{"mtu negative", `{"name":"n","type":"coil","mtu":-9000}`, types.ErrInvalidNetworkConfig, `invalid "mtu" -9000: below 576`},
		{"mtu too big", `{"name":"n","type":"coil","mtu":65536}`, types.ErrInvalidNetworkConfig, `invalid "mtu" 65536: above 65535, the largest MTU of a link`},
		{"mtu huge", `{"name":"n","type":"coil","mtu":99999999999999999999}`, types.ErrInvalidNetworkConfig, `invalid "mtu" 99999999999999999999: want a whole number of bytes, 576-65535 (1280 or more when the pool has IPv6)`},
		{"mtu fraction", `{"name":"n","type":"coil","mtu":1500.5}`, types.ErrInvalidNetworkConfig, `invalid "mtu" 1500.5: want a whole number`},
		{"mtu float", `{"name":"n","type":"coil","mtu":1500.0}`, types.ErrInvalidNetworkConfig, `invalid "mtu" 1500.0: want a whole number`},
		{"mtu exponent", `{"name":"n","type":"coil","mtu":9e3}`, types.ErrInvalidNetworkConfig, `invalid "mtu" 9e3: want a whole number`},
		{"mtu string", `{"name":"n","type":"coil","mtu":"9000"}`, types.ErrInvalidNetworkConfig, `"mtu" must be a number, got "9000"`},
		{"mtu bool", `{"name":"n","type":"coil","mtu":true}`, types.ErrInvalidNetworkConfig, `"mtu" must be a number, got true`},
		{"mtu object", `{"name":"n","type":"coil","mtu":{}}`, types.ErrInvalidNetworkConfig, `"mtu" must be a number, got {}`},
		{"typo", `{"name":"n","type":"coil","sokcet":"/run/x.sock"}`, types.ErrUnsupportedField, `unsupported field "sokcet" = "/run/x.sock"`},
		{"ipam", `{"name":"n","type":"coil","ipam":{"type":"host-local"}}`, types.ErrUnsupportedField, `coil allocates addresses itself`},
		{"bad prevResult", `{"cniVersion":"1.0.0","name":"n","type":"coil","prevResult":{"ips":"x"}}`, types.ErrDecodingFailure, `cannot parse "prevResult"`},
		{"bad attachments", `{"name":"n","type":"coil","cni.dev/valid-attachments":{}}`, types.ErrDecodingFailure, `cannot parse "cni.dev/valid-attachments"`},
		{"attachment not an object", `{"name":"n","type":"coil","cni.dev/valid-attachments":["a"]}`, types.ErrDecodingFailure, `cannot parse "cni.dev/valid-attachments"`},
		// GC releases what the list does not name: a broken entry fails the GC (issue 10).
		{"bogus attachment", `{"name":"n","type":"coil","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"bogus":"x"}]}`,
			types.ErrInvalidNetworkConfig, `entry 1 of "cni.dev/valid-attachments" is not a valid attachment: containerID is empty`},
		{"null attachment", `{"name":"n","type":"coil","cni.dev/valid-attachments":[null]}`,
			types.ErrInvalidNetworkConfig, `entry 0 of "cni.dev/valid-attachments" is not a valid attachment: containerID is empty`},
		{"attachment without ifname", `{"name":"n","type":"coil","cni.dev/valid-attachments":[{"containerID":"a"}]}`,
			types.ErrInvalidNetworkConfig, `entry 0 of "cni.dev/valid-attachments" is not a valid attachment: ifname is empty`},
		{"attachment with a bad containerID", `{"name":"n","type":"coil","cni.dev/attachments":[{"containerID":"../a","ifname":"eth0"}]}`,
			types.ErrInvalidNetworkConfig, `entry 0 of "cni.dev/attachments" is not a valid attachment: invalid containerID "../a"`},
		{"attachment with a bad ifname", `{"name":"n","type":"coil","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0\n"}]}`,
			types.ErrInvalidNetworkConfig, `invalid ifname "eth0\n"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseConfig([]byte(tc.conf))
			if e == nil {
				t.Fatalf("accepted %s", tc.conf)
			}
			if e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) {
				t.Fatalf("got code %d %q (details %q), want code %d and %q", e.Code, e.Msg, e.Details, tc.code, tc.msg)
			}
		})
	}
}

func TestParseConfigPrevResult(t *testing.T) {
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		conf := `{"cniVersion":"` + v + `","name":"n","type":"coil","prevResult":{"cniVersion":"` + v + `",
			"interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],
			"ips":[{"version":"4","interface":0,"address":"10.1.0.5/32","gateway":"169.254.1.1"},
			       {"version":"6","interface":0,"address":"fd00::5/128","gateway":"fe80::1"}]}}`
		c, e := parseConfig([]byte(conf))
		if e != nil {
			t.Fatalf("%s: %v", v, e)
		}
		if c.PrevResult == nil {
			t.Fatalf("%s: no prevResult", v)
		}
	}
}

func TestParseConfigGCAttachments(t *testing.T) {
	c, e := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"coil",
		"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth0"}],
		"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"c","ifname":"net1"}]}`))
	if e != nil {
		t.Fatal(e)
	}
	want := []cniproto.Attachment{{ContainerID: "a", IfName: "eth0"}, {ContainerID: "b", IfName: "eth0"}, {ContainerID: "c", IfName: "net1"}}
	if len(c.ValidAttachments) != len(want) {
		t.Fatalf("%+v", c.ValidAttachments)
	}
	for i := range want {
		if c.ValidAttachments[i] != want[i] {
			t.Fatalf("%+v", c.ValidAttachments)
		}
	}
	// Only the older key.
	c, e = parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"coil","cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	if e != nil || len(c.ValidAttachments) != 1 {
		t.Fatalf("%+v %v", c, e)
	}
	// An empty list is "nothing is valid", distinct from no list.
	c, e = parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"coil","cni.dev/valid-attachments":[]}`))
	if e != nil || c.ValidAttachments == nil || len(c.ValidAttachments) != 0 {
		t.Fatalf("%+v %v", c, e)
	}
	// null (what libcni sends without a list) is no list.
	c, e = parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"coil","cni.dev/valid-attachments":null,"cni.dev/attachments":null}`))
	if e != nil || c.ValidAttachments != nil {
		t.Fatalf("%+v %v", c, e)
	}
}

func TestPoolNameAgreesWithEvents(t *testing.T) {
	for _, n := range []string{"a", "default", "blue-1", "a.b", "0", "-a", "a-", ".a", "A", "a_b", "a b",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "ä"} {
		ours, theirs := cniproto.ValidPoolName(n) == nil, events.ValidName(n) == nil
		if ours != theirs {
			t.Errorf("pool name %q: plugin says valid=%v, events.ValidName says %v", n, ours, theirs)
		}
	}
}

func TestParseArgs(t *testing.T) {
	a, e := parseArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234-5")
	if e != nil {
		t.Fatal(e)
	}
	if a != (podArgs{Namespace: "default", Name: "web-0", UID: "1234-5"}) {
		t.Fatalf("%+v", a)
	}
	if a, e := parseArgs(""); e != nil || a != (podArgs{}) {
		t.Fatalf("%+v %v", a, e)
	}
	if _, e := parseArgs("K8S_POD_NAME=x;garbage"); e == nil || e.Code != types.ErrInvalidEnvironmentVariables ||
		!strings.Contains(e.Msg, `"garbage" is not KEY=VALUE`) {
		t.Fatalf("%v", e)
	}
}
