// Package cniproto is the wire protocol between the CNI plugin `coil` and the node
// daemon `coild`: HTTP/1.1 over a UNIX socket with JSON bodies.
//
// The protocol is versioned by path: every call is a POST to /v1/<op> (add, del, check,
// gc, status). A request body is JSON (Request or GCRequest); a successful reply is
// 200 with a JSON body (AddResult for add, {} otherwise); a failed reply is a non-200
// status with an Error as JSON body, which carries the CNI error code the plugin
// reports to the container runtime. A future incompatible protocol gets /v2 paths, and
// a server answers 404 to a version it does not speak, which the client reports as
// ErrProtocol. Bodies are at most MaxBody bytes.
//
// This package holds the types, the error codes, the client (NewClient, Client), used by
// the plugin, and the rules every request field must follow (validate.go:
// Request.Validate, GCRequest.Validate, MaxBodyFor), which the plugin applies before it
// calls coild and coild's server applies again to every request it receives. The server (package cniproto/cniserver) is run by coild with a
// Handler. The client never retries: the container runtime retries CNI calls itself.
//
// This package must stay light: the plugin imports it and is exec'd for every pod. It
// imports only the standard library, and not net/http: the client writes its
// request and reads the reply by hand (one request per connection). Its errors are the
// standard library's (sentinels wrapped with fmt.Errorf and %w), a deliberate exception
// to the project's use of cockroachdb/errors, which links sentry-go, gogo/protobuf and
// net/http into whatever imports it. cmd/coil/deps_test.go enforces both.
package cniproto
