// Package projection folds events into state. It is pure: no etcd, no kernel, no clock.
//
// There is one fold per stream kind: Cluster (stream "cluster": pools), Blocks (a
// "pool/NAME" stream: block owners) and Node (a "node/NAME" stream: registration and
// addresses). State bundles them. Each Apply is exhaustive over event types: an unknown
// type, a newer schema, an event out of sequence or one that contradicts the state (a
// block assigned twice, an address held twice) is an error, and on error the state is
// unchanged.
//
// A Snapshot event carries the stream's state before it; a reader that starts at a
// snapshot loads it, a reader that folded the stream from the start checks it matches.
// So snapshot + tail equals full replay, and a mismatch is detected.
package projection
