// Command cni measures CNI ADD and DEL through cnitool for three plugins on one machine,
// interleaved in one run: coil (forwarding to a coild running in a lab node), the reference
// ptp + host-local (containernetworking/plugins), and noop (bench/cni/noop, a plugin that
// does nothing: the floor of exec + cnitool + the namespace wrapper). It also runs bursts
// of concurrent ADDs and DELs per plugin and checks every ADD of a burst got a distinct
// address.
//
// It builds a throwaway lab (package lab): one node namespace per plugin, pod namespaces
// created before timing, everything removed at the end, also on Ctrl-C (SIGINT/SIGTERM).
// It prints a Markdown report on stdout and progress on stderr. See README.md.
package main
