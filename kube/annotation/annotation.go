// Package annotation parses the annotations Coil reads from Kubernetes objects. It
// imports no Kubernetes client (so it can be fuzzed cheaply) and bounds what it quotes:
// an annotation is whatever a user with rights on the object wrote, up to 256 KiB.
package annotation

import (
	"net/netip"
	"strings"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/cniproto"
	"github.com/coil-net/coil/events"
	"github.com/coil-net/coil/internal/safetext"
)

// Pool is the pod and namespace annotation that names the pool a pod's addresses come
// from.
const Pool = "coil.cybozu.com/pool"

// ErrInvalid: an annotation is present but its value is not valid.
var ErrInvalid = errors.New("annotation: invalid value")

// ParsePool returns the pool a Pool annotation's value names: the value without
// surrounding white space, which must be a pool name (events.ValidName). Otherwise it
// returns an error wrapping ErrInvalid that quotes the value (escaped, at most 64 bytes).
func ParsePool(value string) (string, error) {
	v := strings.TrimSpace(value)
	if err := events.ValidName(v); err != nil {
		return "", errors.Wrapf(ErrInvalid, "%s=%s: %v", Pool, safetext.Quote(value), err)
	}
	return v, nil
}

// IP is the pod annotation that asks for a fixed address: one address per family,
// separated by a comma ("198.18.5.7", "198.18.5.7,fd00::7"). The CNI runtime config
// "ips" wins over it when both are given (docs/kubernetes.md, "Fixed addresses").
const IP = "coil.cybozu.com/ip"

// ParseIPs returns the addresses an IP annotation's value names: a comma-separated list
// of addresses (white space around each is ignored; the CIDR form is accepted and its
// prefix length ignored, as for the CNI "ips"), at most one per family. Otherwise it
// returns an error wrapping ErrInvalid that quotes the value.
func ParseIPs(value string) ([]netip.Addr, error) {
	if len(value) > 256 {
		return nil, errors.Wrapf(ErrInvalid, "%s=%s: longer than 256 bytes; want one address per family, such as 198.18.5.7,fd00::7", IP, safetext.Quote(value))
	}
	ips, err := cniproto.ParseFixedIPs(strings.Split(value, ","))
	if err != nil {
		return nil, errors.Wrapf(ErrInvalid, "%s=%s: %v", IP, safetext.Quote(value), err)
	}
	return ips, nil
}
