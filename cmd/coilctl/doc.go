// Command coilctl is Coil's operator command line: pools, blocks, addresses, nodes and
// the event log kept in etcd. The commands live in package internal/cli; see
// docs/coilctl.md for every command, flag, output column and exit code.
package main
