package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/coil-net/coil/cniproto"
)

// errBadResult: coild's AddResult cannot be turned into a CNI result.
var errBadResult = errors.New("coil: bad add result")

// buildResult turns coild's answer into a CNI 1.0 result: the host veth (no sandbox),
// the pod interface (with the netns path as sandbox), one /32 or /128 per address with
// its link-local gateway, and a default route per family via that gateway.
func buildResult(res *cniproto.AddResult, ifName, netns string) (*types100.Result, error) {
	if len(res.Addrs) == 0 {
		return nil, fmt.Errorf("no address: %w", errBadResult)
	}
	podIf := res.PodIfName
	if podIf == "" {
		podIf = ifName
	}
	r := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	if res.HostVeth != "" {
		r.Interfaces = append(r.Interfaces, &types100.Interface{Name: res.HostVeth, Mac: res.HostMAC, Mtu: res.MTU})
	}
	r.Interfaces = append(r.Interfaces, &types100.Interface{Name: podIf, Mac: res.PodMAC, Mtu: res.MTU, Sandbox: netns})
	podIdx := len(r.Interfaces) - 1
	var have4, have6 bool
	for _, a := range res.Addrs {
		if !a.IsValid() {
			return nil, fmt.Errorf("invalid address: %w", errBadResult)
		}
		a = a.Unmap()
		gw, bits, dst := res.Gateway4, 32, "0.0.0.0/0"
		if a.Is6() {
			gw, bits, dst = res.Gateway6, 128, "::/0"
			if have6 {
				return nil, fmt.Errorf("two IPv6 addresses (%s): %w", a, errBadResult)
			}
			have6 = true
		} else {
			if have4 {
				return nil, fmt.Errorf("two IPv4 addresses (%s): %w", a, errBadResult)
			}
			have4 = true
		}
		if !gw.IsValid() || gw.Is4() != a.Is4() {
			return nil, fmt.Errorf("no gateway of the family of %s: %w", a, errBadResult)
		}
		idx := podIdx
		r.IPs = append(r.IPs, &types100.IPConfig{
			Interface: &idx,
			Address:   net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)},
			Gateway:   gw.AsSlice(),
		})
		_, dstNet, _ := net.ParseCIDR(dst)
		r.Routes = append(r.Routes, &types.Route{Dst: *dstNet, GW: gw.AsSlice()})
	}
	return r, nil
}
