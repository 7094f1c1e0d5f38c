// Package e2e holds Coil's end-to-end tests: several nodes as network namespaces on a
// bridge (package lab), one BIRD 2 and one coild per node, one etcd (node 0's coild with
// --embedded-etcd) reached over a unix socket, pods added through cnitool and the real coil
// plugin, and traffic between pods across nodes. They need root, bird, cnitool and ping;
// without them they skip loudly, and under CI they fail.
package e2e
