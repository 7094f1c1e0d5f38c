// Package runtimes tests Coil's installed network configuration (the conflist that
// install-cni writes: coil, then portmap and bandwidth) with the CNI clients container
// runtimes embed: libcni 1.3 (the generation of containerd 2 and CRI-O, which read
// "cniVersions" and pick 1.1.0) and Debian's containerd 1.6 with runc (libcni 1.1, which
// rejects a 1.1.0 result), driven by `ctr run --cni` on an image built by
// internal/images. coild runs in-process against an embedded etcd; every node is a
// throwaway network namespace and, for containerd, a private mount namespace.
//
// They need root, iptables, nsenter and unshare, and for containerd the Debian packages
// containerd and runc (`scripts/setup.sh test` installs them); without them they skip
// loudly, and under CI they fail.
package runtimes
