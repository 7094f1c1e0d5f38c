// Package ipamcheck compares what Coil's log says with what exists: a node's kernel
// (veths, the pods' /32 and /128 routes, the export table) against the node's projection,
// and Kubernetes pods against the attachments of the log. It is pure: coild gathers the
// kernel state (through netplumb and exporter) and serves a NodeReport on its metrics
// port (GET /ipam), `coilctl ipam check` gathers the pods and the reports and prints the
// findings. See docs/coilctl.md, "coilctl ipam check".
package ipamcheck
