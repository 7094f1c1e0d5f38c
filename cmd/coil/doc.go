// Command coil is Coil's CNI plugin. The container runtime execs it for every pod
// network operation (ADD, DEL, CHECK, GC, STATUS, VERSION); it parses and validates the
// call, forwards it to the node daemon coild over a UNIX socket (package cniproto) with
// a timeout, turns coild's answer into a CNI result in the requested cniVersion, and
// maps failures to CNI error codes. docs/cni.md lists the configuration keys, CNI_ARGS
// used, and which error code each failure returns.
//
// It is exec'd per pod, so it stays small and quick to start: it imports neither etcd,
// client-go, net/http nor cockroachdb/errors (deps_test.go enforces it); its errors are
// the standard library's, sentinels wrapped with fmt.Errorf and %w, a deliberate
// exception to the project's rule (docs/cni.md, "Why so few dependencies"). Build it
// with CGO_ENABLED=0 -ldflags "-s -w".
package main
