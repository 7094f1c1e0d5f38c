package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/cniproto"
)

func TestToCNIError(t *testing.T) {
	unavailable := fmt.Errorf("socket /run/coild.sock does not exist: %w", cniproto.ErrUnavailable)
	timeout := fmt.Errorf("/run/coild.sock: %w", cniproto.ErrTimeout)
	perm := fmt.Errorf("cannot open /run/coild.sock as uid 65534: %w", cniproto.ErrPermissionDenied)
	for _, tc := range []struct {
		op   op
		err  error
		code uint
		msg  string
	}{
		{opAdd, cniproto.PoolExhausted("blue"), types.ErrTryAgainLater, `pool "blue" is exhausted`},
		{opAdd, cniproto.UnknownPool("x"), types.ErrInvalidNetworkConfig, `pool "x" does not exist`},
		{opAdd, unavailable, types.ErrTryAgainLater, "ADD: coild is unreachable"},
		{opDel, unavailable, types.ErrTryAgainLater, "DEL: coild is unreachable"},
		{opAdd, timeout, types.ErrTryAgainLater, "did not answer in time"},
		{opGC, unavailable, types.ErrTryAgainLater, "GC: coild is unreachable"},
		{opStatus, unavailable, types.ErrPluginNotAvailable, "STATUS: coild is unreachable"},
		{opStatus, timeout, types.ErrPluginNotAvailable, "did not answer in time"},
		{opStatus, cniproto.NotReady("replaying"), types.ErrPluginNotAvailable, "coild is not ready"},
		{opStatus, cniproto.NewError(cniproto.CodeInternal, "boom", ""), types.ErrPluginNotAvailable, "boom"},
		{opStatus, cniproto.NewError(cniproto.CodeLimitedConnectivity, "no BGP peer", ""), types.ErrLimitedConnectivity, "no BGP peer"},
		{opAdd, perm, types.ErrIOFailure, "permission denied"},
		{opStatus, perm, types.ErrPluginNotAvailable, "permission denied"},
		{opCheck, cniproto.UnknownContainer("c", "eth0"), types.ErrUnknownContainer, "no attachment"},
		{opAdd, fmt.Errorf("HTTP 404: %w", cniproto.ErrProtocol), types.ErrInternal, "talking to coild failed"},
		{opGC, fmt.Errorf("/v1/gc request of 9000000 bytes: %w", cniproto.ErrTooLarge), types.ErrInvalidNetworkConfig, "GC: the request is too large for coild"},
	} {
		e := toCNIError(tc.op, tc.err)
		if e.Code != tc.code || !strings.Contains(e.Msg, tc.msg) {
			t.Errorf("%s %v: got %d %q, want %d %q", tc.op, tc.err, e.Code, e.Msg, tc.code, tc.msg)
		}
	}
	// The socket path reaches the runtime's error text.
	if e := toCNIError(opAdd, perm); !strings.Contains(e.Error(), "/run/coild.sock") {
		t.Errorf("path missing from %q", e.Error())
	}
}
