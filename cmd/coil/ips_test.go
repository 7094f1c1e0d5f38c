package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestParseRuntimeIPs: runtimeConfig "ips" (the "ips" capability, as libcni passes it):
// CIDR or plain addresses, one per family; other runtimeConfig keys are ignored; every
// malformed value is code 7 (code 6 for a runtimeConfig that is not an object), naming it.
func TestParseRuntimeIPs(t *testing.T) {
	for _, c := range []struct {
		rc   string
		want []string
	}{
		{`{}`, nil},
		{`{"ips":null}`, nil},
		{`{"ips":[]}`, nil},
		{`{"portMappings":[{"hostPort":80}],"ips":["198.18.5.7"]}`, []string{"198.18.5.7"}},
		{`{"ips":["198.18.5.7/24","fd00::7/64"]}`, []string{"198.18.5.7", "fd00::7"}},
		{`{"ips":[" fd00::7 "]}`, []string{"fd00::7"}},
		{`{"ips":["::ffff:198.18.5.7"]}`, []string{"198.18.5.7"}},
	} {
		conf, e := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"coil","capabilities":{"ips":true},"runtimeConfig":` + c.rc + `}`))
		if e != nil {
			t.Fatalf("%s: %v", c.rc, e)
		}
		var want []netip.Addr
		for _, w := range c.want {
			want = append(want, netip.MustParseAddr(w))
		}
		if !slices.Equal(conf.IPs, want) {
			t.Errorf("%s: IPs %v, want %v", c.rc, conf.IPs, want)
		}
	}
	for _, c := range []struct {
		rc   string
		code uint
		msg  string
	}{
		{`[1]`, types.ErrDecodingFailure, `"runtimeConfig" is not a JSON object`},
		{`{"ips":"198.18.5.7"}`, types.ErrInvalidNetworkConfig, `runtimeConfig "ips" must be a list of strings, got "198.18.5.7"`},
		{`{"ips":[7]}`, types.ErrInvalidNetworkConfig, `runtimeConfig "ips" must be a list of strings, got [7]`},
		{`{"ips":["banana"]}`, types.ErrInvalidNetworkConfig, `invalid runtimeConfig "ips": cniproto: invalid fixed address "banana": want an IPv4 or IPv6 address`},
		{`{"ips":["198.18.5.7/33"]}`, types.ErrInvalidNetworkConfig, `invalid fixed address "198.18.5.7/33"`},
		{`{"ips":["198.18.5.7","198.18.5.8"]}`, types.ErrInvalidNetworkConfig, `198.18.5.7 and 198.18.5.8 are of one family`},
		{`{"ips":["1.1.1.1","fd00::1","2.2.2.2"]}`, types.ErrInvalidNetworkConfig, `3 addresses, at most one per family`},
		{`{"ips":["127.0.0.1"]}`, types.ErrInvalidNetworkConfig, `not a unicast address a pod may have`},
		{`{"ips":["fe80::1"]}`, types.ErrInvalidNetworkConfig, `not a unicast address a pod may have`},
		{`{"ips":["0.0.0.0"]}`, types.ErrInvalidNetworkConfig, `not a unicast address a pod may have`},
		{`{"ips":["fd00::1%eth0"]}`, types.ErrInvalidNetworkConfig, `an address with a zone`},
	} {
		_, e := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"n","type":"coil","runtimeConfig":` + c.rc + `}`))
		if e == nil || e.Code != c.code || !strings.Contains(e.Msg, c.msg) {
			t.Errorf("%s: got %v, want code %d and %q", c.rc, e, c.code, c.msg)
		}
	}
}
