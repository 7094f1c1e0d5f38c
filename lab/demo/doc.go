// Package demo runs Coil end to end on a lab (package lab): one coild per node namespace,
// the first one serving the embedded etcd (`coild --embedded-etcd`) on a unix socket that
// every node reaches, BIRD announcing each node's blocks, and pods added through cnitool and
// the real `coil` plugin. The demo program (cmd/coil-demo), the end-to-end tests (test/e2e)
// and the multi-node figures (bench/e2e) share it.
//
// Everything runs inside the lab's namespaces; nothing is added to the root network
// namespace. Cluster.Close stops every process (coild, BIRD) by PID and removes every
// namespace, also after a failure midway through Start. Needs root, ip, bird, birdc,
// cnitool, unshare, mount and ping, and the binaries coil, coild and coilctl (BuildBinaries
// or `make build`).
package demo
