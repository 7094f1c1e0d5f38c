package cniproto

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Fixed addresses: a pod may ask for its address, through the CNI "ips" capability
// (runtimeConfig "ips", CNI CONVENTIONS) or the pod annotation coil.cybozu.com/ip, which
// coild reads (docs/cni.md, "Fixed addresses").

// MaxFixedIPs is how many fixed addresses one attachment may ask for: one per family.
const MaxFixedIPs = 2

// ErrFixedIP: a fixed address that does not parse, or a list that is not one address
// per family.
var ErrFixedIP = errors.New("cniproto: invalid fixed address")

// ParseFixedIP parses one fixed address: a plain address ("198.18.5.7", "fd00::7") or
// the CIDR form the CNI conventions give "ips" ("198.18.5.7/24"); a prefix length is
// accepted and ignored: a pod gets a /32 or /128 (docs/cni.md).
func ParseFixedIP(s string) (netip.Addr, error) {
	t := strings.TrimSpace(s)
	var a netip.Addr
	var err error
	if strings.Contains(t, "/") {
		var p netip.Prefix
		if p, err = netip.ParsePrefix(t); err == nil {
			a = p.Addr()
		}
	} else {
		a, err = netip.ParseAddr(t)
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w %s: want an IPv4 or IPv6 address such as 198.18.5.7 or fd00::7 (a /prefix is ignored)", ErrFixedIP, Show(s))
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%w %s: an address with a zone is not a pod address", ErrFixedIP, Show(s))
	}
	a = a.Unmap()
	switch {
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(), a.IsInterfaceLocalMulticast():
		return netip.Addr{}, fmt.Errorf("%w %s: not a unicast address a pod may have (unspecified, loopback, multicast or link-local)", ErrFixedIP, Show(s))
	}
	return a, nil
}

// CheckFixedIPs checks a list of fixed addresses: at most one per family, each as
// ParseFixedIP returns them.
func CheckFixedIPs(as []netip.Addr) error {
	if len(as) > MaxFixedIPs {
		return fmt.Errorf("%w: %d addresses, at most one per family (2)", ErrFixedIP, len(as))
	}
	for i, a := range as {
		if !a.IsValid() || a.Is4In6() {
			return fmt.Errorf("%w %s", ErrFixedIP, Show(a.String()))
		}
		if _, err := ParseFixedIP(a.String()); err != nil {
			return err
		}
		for _, b := range as[:i] {
			if b.Is4() == a.Is4() {
				return fmt.Errorf("%w: %s and %s are of one family: ask for one address per family", ErrFixedIP, b, a)
			}
		}
	}
	return nil
}

// ParseFixedIPs parses a list of fixed addresses (the strings of runtimeConfig "ips",
// or the elements of the annotation) and checks it (CheckFixedIPs).
func ParseFixedIPs(list []string) ([]netip.Addr, error) {
	if len(list) > MaxFixedIPs {
		return nil, fmt.Errorf("%w: %d addresses, at most one per family (2)", ErrFixedIP, len(list))
	}
	out := make([]netip.Addr, 0, len(list))
	for _, s := range list {
		a, err := ParseFixedIP(s)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if err := CheckFixedIPs(out); err != nil {
		return nil, err
	}
	return out, nil
}
