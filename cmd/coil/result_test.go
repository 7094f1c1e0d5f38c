package main

import (
	"errors"
	"net/netip"
	"testing"

	types040 "github.com/containernetworking/cni/pkg/types/040"

	"github.com/coil-net/coil/cniproto"
)

func dualStack() *cniproto.AddResult {
	return &cniproto.AddResult{
		HostVeth: "coil1a2b3c", HostMAC: "02:00:00:00:00:01", PodIfName: "eth0", PodMAC: "02:00:00:00:00:02",
		Addrs:    []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd00::5")},
		Gateway4: netip.MustParseAddr("169.254.1.1"), Gateway6: netip.MustParseAddr("fe80::1"),
	}
}

func TestBuildResult(t *testing.T) {
	r, err := buildResult(dualStack(), "eth0", "/var/run/netns/p")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Interfaces) != 2 || r.Interfaces[1].Sandbox != "/var/run/netns/p" || r.Interfaces[0].Sandbox != "" ||
		r.Interfaces[1].Name != "eth0" || r.Interfaces[0].Name != "coil1a2b3c" {
		t.Fatalf("interfaces %+v %+v", r.Interfaces[0], r.Interfaces[1])
	}
	if len(r.IPs) != 2 || r.IPs[0].Address.String() != "10.1.0.5/32" || r.IPs[1].Address.String() != "fd00::5/128" ||
		r.IPs[0].Gateway.String() != "169.254.1.1" || r.IPs[1].Gateway.String() != "fe80::1" || *r.IPs[0].Interface != 1 {
		t.Fatalf("ips %+v %+v", r.IPs[0], r.IPs[1])
	}
	if len(r.Routes) != 2 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[1].Dst.String() != "::/0" ||
		r.Routes[1].GW.String() != "fe80::1" {
		t.Fatalf("routes %+v", r.Routes)
	}
	for _, v := range []string{"0.3.1", "0.4.0"} {
		old, err := r.GetAsVersion(v)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		o := old.(*types040.Result)
		if len(o.IPs) != 2 || o.IPs[0].Version != "4" || o.IPs[1].Version != "6" {
			t.Fatalf("%s: %+v", v, o.IPs)
		}
	}
}

func TestBuildResultRejects(t *testing.T) {
	for name, mod := range map[string]func(*cniproto.AddResult){
		"no address":   func(r *cniproto.AddResult) { r.Addrs = nil },
		"two v4":       func(r *cniproto.AddResult) { r.Addrs = append(r.Addrs, netip.MustParseAddr("10.1.0.6")) },
		"no gateway 6": func(r *cniproto.AddResult) { r.Gateway6 = netip.Addr{} },
		"invalid addr": func(r *cniproto.AddResult) { r.Addrs[0] = netip.Addr{} },
	} {
		r := dualStack()
		mod(r)
		if _, err := buildResult(r, "eth0", "/x"); !errors.Is(err, errBadResult) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Single stack, pod ifname from the call when coild leaves it empty.
	r := dualStack()
	r.Addrs, r.Gateway6, r.PodIfName, r.HostVeth = r.Addrs[:1], netip.Addr{}, "", ""
	res, err := buildResult(r, "net1", "/x")
	if err != nil || len(res.Interfaces) != 1 || res.Interfaces[0].Name != "net1" || *res.IPs[0].Interface != 0 {
		t.Fatalf("%+v %v", res, err)
	}
}
