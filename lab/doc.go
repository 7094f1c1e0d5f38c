// Package lab builds a throwaway multi-node Coil test bed on one machine: every "node" is a
// network namespace joined to the others by a veth to a Linux bridge in a fabric namespace,
// and runs its own BIRD 2 that peers over iBGP with the other nodes (full mesh or with node 0
// as route reflector). BIRD learns the node's export table (default 119, route protocol 30)
// and installs what the peers announce into the node's main table, exactly as on a real node
// (docs/bird.md).
//
// Tests, the demo and the benchmarks share it. Start creates everything and tears down what
// it made if it fails midway; Close removes every namespace, link and process the lab made
// and is idempotent. Nothing is added to the root network namespace: every address of the
// lab (the fabric is 10.255.0.0/24 and fd00:255::/64 by default) exists only inside the lab's
// namespaces, so several labs can run side by side.
//
// Processes the lab starts (BIRD, and whatever StartProcess runs, e.g. coild through
// Config.OnNode) are its children: they are stopped by PID at Close, and die with the lab's
// process (PR_SET_PDEATHSIG) if it crashes. Namespaces left by a crashed run are removed by
// Sweep, which only touches labs whose owner process is gone.
//
// Everything needs root and the commands ip (iproute2), bird and birdc (BIRD 2); CNI needs
// cnitool, unshare and mount.
package lab
