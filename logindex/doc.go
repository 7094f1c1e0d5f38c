// Package logindex keeps the attachment index: derived, rebuildable data that lets a
// reader skip the parts of a node stream that cannot mention a pod or a container.
//
// A node stream is cut into fixed chunks of DefaultChunkSize events: chunk k covers the
// sequences [k*size+1, (k+1)*size]. For each complete chunk (the stream's head is at or
// past its last sequence) an Entry holds a Bloom filter (about 1% false positives) of the
// keys its events mention: PodKey of every AddressAssigned that names a pod and
// ContainerKey of every AddressAssigned and AddressReleased. An entry is stored at
// events.Keys.Index(stream, first) and names its first and last sequence and the hash of
// its last event, so it is tied to the log it was built from.
//
// The index is not part of the log: it is outside the hash chain, never exported, and can
// be deleted and rebuilt at any time (Build, Delete). A missing entry, or one that no
// longer matches the log (Verify), only means "read these events": readers plan their
// reads with Segments and MayContain, and what they find is the same as a full scan.
//
// Writers are idempotent: chunks are immutable, so every builder computes the same entry,
// and an entry is written only where none exists (etcd CreateRevision == 0).
package logindex
