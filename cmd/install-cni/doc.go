// Command install-cni installs Coil's CNI plugins (coil, portmap, bandwidth) and its
// network configuration list on the node: the init container of coild's DaemonSet runs
// it (deploy/coild.yaml), with the host's /opt/cni/bin and /etc/cni/net.d mounted at
// /host/opt/cni/bin and /host/etc/cni/net.d. It is a Go program because the coil image
// has no shell. Every file is written atomically and other files are left alone
// (package internal/installcni); flags and their environment variables are listed in
// docs/kubernetes.md. Exit code 0: installed (or already in place); 1: nothing or not
// everything was installed (the message says what to fix); 2: bad usage.
package main
