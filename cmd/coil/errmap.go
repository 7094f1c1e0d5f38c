package main

import (
	"fmt"

	"github.com/cockroachdb/errors"
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
//   - coild's own *cniproto.Error: passed through unchanged (coild chose the code);
//     for STATUS any code but 51 becomes 50, the only codes STATUS may return.
//   - coild unreachable (no socket, refused) or too slow: 11 (try again later) for
//     ADD, DEL, CHECK and GC, 50 (plugin not available) for STATUS.
//   - permission denied on the socket: 5 (I/O failure) with the path: retrying as
//     the same user cannot help.
//   - anything else (protocol mismatch): 999.
func toCNIError(o op, err error) *types.Error {
	var pe *cniproto.Error
	if errors.As(err, &pe) {
		code := pe.Code
		if o == opStatus && code != cniproto.CodeLimitedConnectivity {
			code = cniproto.CodePluginNotAvailable
		}
		return types.NewError(code, pe.Msg, pe.Details)
	}
	switch {
	case errors.Is(err, cniproto.ErrPermissionDenied):
		return types.NewError(types.ErrIOFailure,
			fmt.Sprintf("%s: permission denied on coild's socket; coil must run as root", o), err.Error())
	case errors.Is(err, cniproto.ErrUnavailable), errors.Is(err, cniproto.ErrTimeout):
		what := "coild is unreachable"
		if errors.Is(err, cniproto.ErrTimeout) {
			what = "coild did not answer in time"
		}
		if o == opStatus {
			return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("%s: %s", o, what), err.Error())
		}
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: %s; try again later", o, what), err.Error())
	default:
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: talking to coild failed", o), err.Error())
	}
}
