// Package exporter owns the export table (default table 119, route protocol 30): it
// keeps it equal to the set of address blocks the node owns, one blackhole route per
// block. BIRD's kernel protocol learns that table and announces the blocks over BGP.
// Nothing else in Coil writes the table.
//
// Two calls change it:
//
//   - Sync is declarative: it lists the table's blackhole routes of the configured
//     protocol, adds the missing blocks and deletes the extra ones (and so repairs a
//     table changed behind Coil's back). SyncChanged does the same only when the blocks
//     differ from those the exporter knows it exported.
//   - Ensure is an ADD's fast path: it adds the routes of the blocks the exporter does
//     not know to be exported, one route each, without listing the table, and returns
//     once they are there. Concurrent Ensures of one new block add its route once.
//
// The Exporter remembers which blocks it exported (the last successful Sync's set plus
// what Ensure added since) and serialises every change to the table with one lock.
//
// Only blackhole routes with the configured table AND protocol are ever touched (the
// routes Coil writes); routes of other protocols or types in the same table are left
// alone, and the kernel's own tables (main, local, default, unspec) are refused.
// The kernel is reached through the Routes interface, which *netplumb.Plumber satisfies;
// this package does not import netlink, and its logic is tested over an in-memory
// Routes (the kernel's in exporter_root_test.go).
package exporter
