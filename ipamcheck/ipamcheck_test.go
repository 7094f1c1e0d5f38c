package ipamcheck_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/coil-net/coil/ipamcheck"
)

func kinds(fs []ipamcheck.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Kind+" "+f.Address+" "+f.Veth)
	}
	return out
}

var (
	a1 = netip.MustParseAddr("10.0.0.1")
	a2 = netip.MustParseAddr("10.0.0.2")
	a3 = netip.MustParseAddr("10.0.0.3")
	b0 = netip.MustParsePrefix("10.0.0.0/28")
	b1 = netip.MustParsePrefix("10.0.0.16/28")
)

func TestCompareKernel(t *testing.T) {
	clean := func() *ipamcheck.NodeReport {
		return &ipamcheck.NodeReport{
			Node:        "n1",
			Attachments: []ipamcheck.Attachment{{ContainerID: "c1", IfName: "eth0", Veth: "v1", Addrs: []netip.Addr{a1}}},
			Blocks:      []netip.Prefix{b0},
			Veths:       []ipamcheck.Veth{{Name: "v1"}, {Name: "vp", Pending: true}},
			Routes:      []ipamcheck.Route{{Dst: netip.PrefixFrom(a1, 32), Link: "v1"}},
			ExportTable: 119, ExportRoutes: []netip.Prefix{b0},
		}
	}
	r := clean()
	ipamcheck.CompareKernel(r)
	if len(r.Findings) != 0 {
		t.Fatalf("clean node: %v", kinds(r.Findings))
	}
	r = clean()
	r.Attachments = append(r.Attachments,
		ipamcheck.Attachment{ContainerID: "c2", IfName: "eth0", Veth: "v2", Addrs: []netip.Addr{a2}},
		ipamcheck.Attachment{ContainerID: "c4", IfName: "eth0", Veth: "v4", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.4")}})
	r.Veths = append(r.Veths, ipamcheck.Veth{Name: "v3"}, ipamcheck.Veth{Name: "v4"})
	r.Routes = []ipamcheck.Route{{Dst: netip.PrefixFrom(a1, 32), Link: "v3"}, {Dst: netip.PrefixFrom(a3, 32), Link: "v3"}}
	r.ExportRoutes = []netip.Prefix{b1}
	ipamcheck.CompareKernel(r)
	want := []string{
		"attachment_without_veth 10.0.0.2 v2",
		"export_extra 10.0.0.16/28 ",
		"export_missing 10.0.0.0/28 ",
		"route_missing 10.0.0.4 v4",
		"route_without_assignment 10.0.0.3/32 v3",
		"route_wrong_veth 10.0.0.1/32 v3",
		"veth_without_attachment  v3",
	}
	if got := kinds(r.Findings); !slices.Equal(got, want) {
		t.Fatalf("findings\n%q\nwant\n%q", got, want)
	}
}

func TestComparePods(t *testing.T) {
	held := []ipamcheck.Held{
		{Node: "n1", ContainerID: "c1", IfName: "eth0", Addrs: []netip.Addr{a1}, Pod: ipamcheck.PodRef{Namespace: "ns", Name: "web", UID: "u1"}},
		{Node: "n1", ContainerID: "c2", IfName: "eth0", Addrs: []netip.Addr{a2}, Pod: ipamcheck.PodRef{Namespace: "ns", Name: "gone", UID: "u2"}},
		{Node: "n1", ContainerID: "c3", IfName: "eth0", Addrs: []netip.Addr{a3}, Pod: ipamcheck.PodRef{Namespace: "ns", Name: "sts-0", UID: "old"}},
		{Node: "n1", ContainerID: "c5", IfName: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.5")}}, // no pod recorded: not compared
	}
	pods := []ipamcheck.Pod{
		{Namespace: "ns", Name: "web", UID: "u1", Node: "n1", IPs: []netip.Addr{a1}, Running: true},
		{Namespace: "ns", Name: "sts-0", UID: "new", Node: "n1", Running: true},
		{Namespace: "ns", Name: "stray", UID: "u9", Node: "n2", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.9")}, Running: true},
		{Namespace: "ns", Name: "thief", UID: "u8", Node: "n2", IPs: []netip.Addr{a1}, Running: true},
		{Namespace: "ns", Name: "done", UID: "u7", Node: "n2", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")}}, // not running
	}
	want := []string{
		"pod_address_not_in_log 10.0.0.1 ",
		"pod_address_not_in_log 10.0.0.9 ",
		"pod_gone 10.0.0.2 ",
		"pod_replaced 10.0.0.3 ",
	}
	if got := kinds(ipamcheck.ComparePods(held, pods)); !slices.Equal(got, want) {
		t.Fatalf("findings\n%q\nwant\n%q", got, want)
	}
	if fs := ipamcheck.ComparePods(held[:1], pods[:1]); len(fs) != 0 {
		t.Fatalf("clean: %v", kinds(fs))
	}
}
