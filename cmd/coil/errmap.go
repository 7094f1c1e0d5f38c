package main

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/coil-net/coil/cniproto"
)

type op string

const (
	opAdd    op = "ADD"
	opDel    op = "DEL"
	opCheck  op = "CHECK"
	opGC     op = "GC"
	opStatus op = "STATUS"
)

// toCNIError maps a cniproto client error to the CNI error the runtime sees.
//
//   - coild's own *cniproto.Error: passed through unchanged (coild chose the code).
//   - coild unreachable (no socket, refused) or too slow: 11 (try again later).
//   - a request larger than coild accepts (a GC list too long): 7, not sent.
//   - permission denied on the socket: 5 (I/O failure) with the path: retrying as
//     the same user cannot help.
//   - anything else (protocol mismatch): 999.
//
// STATUS is the exception: the spec gives it 50 (plugin not available) and 51
// (limited connectivity), so every failure of STATUS is 50, keeping the message,
// unless coild itself answered 51.
func toCNIError(o op, err error) *types.Error {
	e := mapError(o, err)
	if o == opStatus && e.Code != types.ErrLimitedConnectivity {
		e.Code = types.ErrPluginNotAvailable
	}
	return e
}

func mapError(o op, err error) *types.Error {
	var pe *cniproto.Error
	if errors.As(err, &pe) {
		return types.NewError(pe.Code, pe.Msg, pe.Details)
	}
	switch {
	case errors.Is(err, cniproto.ErrTooLarge):
		// Only a GC list can be that long: every other request's fields are bounded.
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("%s: the request is too large for coild", o), err.Error())
	case errors.Is(err, cniproto.ErrPermissionDenied):
		return types.NewError(types.ErrIOFailure,
			fmt.Sprintf("%s: permission denied on coild's socket; coil must run as root", o), err.Error())
	case errors.Is(err, cniproto.ErrUnavailable), errors.Is(err, cniproto.ErrTimeout):
		what := "coild is unreachable"
		if errors.Is(err, cniproto.ErrTimeout) {
			what = "coild did not answer in time"
		}
		if o != opStatus {
			what += "; try again later"
		}
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: %s", o, what), err.Error())
	default:
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: talking to coild failed", o), err.Error())
	}
}
