// Package exporter keeps the export table (default table 119, route protocol 30) equal
// to the set of address blocks the node owns: one blackhole route per block. BIRD's
// kernel protocol learns that table and announces the blocks over BGP.
//
// Sync is declarative: it lists the table's routes of the configured protocol, adds the
// missing blocks and deletes the extra routes. Only routes with the configured table AND
// protocol are ever touched; routes of other protocols in the same table are left alone.
// The kernel is reached through the Routes interface, which *netplumb.Plumber satisfies;
// this package does not import netlink.
package exporter
