// Package eventstest is the conformance suite of events.Log: every implementation (the
// etcd log, the in-memory log) runs the same tests through Run, with a Harness that
// reaches into its store for leases, compaction and damaged bytes. It also holds sample
// payloads of every event type for codec tests.
package eventstest
