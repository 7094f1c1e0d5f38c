// Package daemon is coild, the node daemon: it registers the node and holds its lease,
// replays and watches the event log, serves the CNI plugin over a UNIX socket, plumbs
// pods with netplumb, keeps the export table equal to the node's blocks, and reconciles
// the kernel with the projection at start and periodically.
//
// Crash consistency rests on one order: an address is committed before its veth is made,
// and released only after its veth is gone. Whatever a crash leaves behind, the
// reconciler settles: a veth with no address is deleted; an address with no veth is
// released with an event that says why; a DEL that was answered but not finished is
// finished (its intent is recorded in the state directory before the answer).
//
// The kernel is reached through Plumber, an interface this package owns (the calls coild
// makes; netplumb's Plumber is the real one). Root tests run coild on the real kernel in
// a throwaway namespace; the tests of coild's own decisions (error mapping, DEL order,
// GC and reconcile decisions) give Config.Plumber an in-memory fake and need no root.
package daemon
