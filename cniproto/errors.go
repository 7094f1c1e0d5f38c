package cniproto

import (
	"errors"
	"fmt"
)

// CNI error codes (CNI SPEC 1.1.0, "Error"). The values equal the
// github.com/containernetworking/cni/pkg/types Err* constants.
const (
	CodeIncompatibleVersion  uint = 1   // incompatible CNI version
	CodeUnsupportedField     uint = 2   // unsupported field in the network configuration
	CodeUnknownContainer     uint = 3   // container unknown or does not exist
	CodeInvalidEnv           uint = 4   // invalid necessary environment variables (CNI_*)
	CodeIOFailure            uint = 5   // I/O failure
	CodeDecodingFailure      uint = 6   // failed to decode content
	CodeInvalidNetworkConfig uint = 7   // invalid network config
	CodeTryAgainLater        uint = 11  // transient condition; the runtime should retry later
	CodePluginNotAvailable   uint = 50  // STATUS: the plugin cannot serve ADD now
	CodeLimitedConnectivity  uint = 51  // STATUS: ADD works but connectivity is limited
	CodeInternal             uint = 999 // anything else
)

// Coil's choices for its own failures (docs/cni.md explains them).
const (
	// CodePoolExhausted: no free address and no free block in the pool. Transient in
	// Coil's model (pods leave, empty blocks are released, operators add subnets), so
	// the runtime is told to try again later.
	CodePoolExhausted = CodeTryAgainLater
	// CodeUnknownPool: the pool named in the netconf or namespace annotation does not
	// exist; the configuration is wrong and retrying cannot help.
	CodeUnknownPool = CodeInvalidNetworkConfig
	// CodeNotReady: coild is starting (replaying the log) or lost etcd. ADD, CHECK and
	// GC are told to try again later; the plugin reports every STATUS failure as 50
	// (plugin not available), the code the spec gives STATUS.
	CodeNotReady = CodeTryAgainLater
	// CodePermissionDenied: coild refuses the caller (its uid, from the socket's peer
	// credentials, is not one coild serves). The same code as a socket the plugin may
	// not open: retrying as the same user cannot help.
	CodePermissionDenied = CodeIOFailure
	// CodeNodeNotSelected: the pool chosen for the pod has a node selector that does not
	// match this node's labels; the configuration (pool choice, labels or selector) must
	// change, so retrying cannot help.
	CodeNodeNotSelected = CodeInvalidNetworkConfig
	// CodePoolDisabled: the pool chosen for the pod is disabled (coilctl pool disable)
	// and no later pool choice is configured; the pool choice must change.
	CodePoolDisabled = CodeInvalidNetworkConfig
)

// Error is a failure with a CNI error code, sent by the server as the body of a
// non-200 reply and returned by the client as *Error. Handlers return it for known
// cases; the plugin reports Code, Msg and Details to the runtime unchanged.
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

// NewError returns an *Error with the given CNI code.
func NewError(code uint, msg, details string) *Error {
	return &Error{Code: code, Msg: msg, Details: details}
}

// Error implements error: "msg: details" or "msg".
func (e *Error) Error() string {
	if e.Details == "" {
		return e.Msg
	}
	return e.Msg + ": " + e.Details
}

// PoolExhausted is the error a handler returns when the pool has no free address.
func PoolExhausted(pool string) *Error {
	return NewError(CodePoolExhausted, fmt.Sprintf("pool %q is exhausted", pool),
		"no free address in the node's blocks and no free block in the pool")
}

// UnknownPool is the error a handler returns when the pool does not exist.
func UnknownPool(pool string) *Error {
	return NewError(CodeUnknownPool, fmt.Sprintf("pool %q does not exist", pool), "")
}

// UnknownContainer is the error Check returns for an attachment coild does not know.
// (Del never returns it: an unknown attachment is a successful Del.)
func UnknownContainer(containerID, ifName string) *Error {
	return NewError(CodeUnknownContainer,
		fmt.Sprintf("no attachment for container %s interface %s", containerID, ifName), "")
}

// NotReady is the error Status (or any call) returns while coild cannot serve Add.
func NotReady(reason string) *Error {
	return NewError(CodeNotReady, "coild is not ready", reason)
}

// Sentinel errors of the client; test with errors.Is. The returned errors wrap them
// with the socket path and the cause.
var (
	// ErrUnavailable: nothing listens on the socket (missing file, connection refused).
	ErrUnavailable = errors.New("cniproto: coild unavailable")
	// ErrPermissionDenied: the caller may not open the socket.
	ErrPermissionDenied = errors.New("cniproto: permission denied on coild socket")
	// ErrTimeout: coild did not answer within the client's timeout (or the caller's
	// context deadline).
	ErrTimeout = errors.New("cniproto: coild did not answer in time")
	// ErrProtocol: the reply was not understood (unknown path, bad JSON): coil and
	// coild probably differ in version.
	ErrProtocol = errors.New("cniproto: protocol error")
	// ErrTooLarge: the request is larger than coild accepts (MaxBodyFor); it was not sent.
	ErrTooLarge = errors.New("cniproto: request too large")
)
