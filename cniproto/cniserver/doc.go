// Package cniserver is the server half of the cniproto protocol, run by coild: it
// serves a cniproto.Handler over HTTP/1.1 (net/http) on a UNIX socket created with
// mode 0600. Being net/http, it can be probed by hand:
//
//	curl --unix-socket /run/coild.sock -X POST -d '{}' http://coild/v1/status
//
// The server checks every request before the handler sees it (body size, one JSON
// value, cniproto's field rules) and bounds what connections can hold (Limits: read
// timeouts, a connection limit that closes the slowest sender first).
//
// It lives apart from package cniproto so that the CNI plugin, which imports cniproto
// for the types and the client, links neither net/http nor cockroachdb/errors.
package cniserver
