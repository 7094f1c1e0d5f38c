//go:build tools

// Package nodekit pins the container runtime and CRI tools of Coil's kubelet nodes
// (lab/kubelab): containerd v2 (containerd, containerd-shim-runc-v2, ctr), runc, crictl
// and critest. It is a separate module so the main module depends on none of them;
// `make node-kit` (scripts/node-kit.sh) builds them from here and caches them per machine.
package nodekit

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "github.com/opencontainers/runc"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
