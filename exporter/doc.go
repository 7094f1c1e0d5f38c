// Package exporter keeps the export table (default table 119, route protocol 30) equal
// to the set of address blocks the node owns: one blackhole route per block. BIRD's
// kernel protocol learns that table and announces the blocks over BGP.
//
// Sync is declarative: it lists the table's blackhole routes of the configured protocol,
// adds the missing blocks and deletes the extra ones. Only blackhole routes with the
// configured table AND protocol are ever touched (the routes Coil writes); routes of
// other protocols or types in the same table are left alone, and the kernel's own tables
// (main, local, default, unspec) are refused.
// The kernel is reached through the Routes interface, which *netplumb.Plumber satisfies;
// this package does not import netlink.
package exporter
