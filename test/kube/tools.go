//go:build tools

// Package kube pins the Kubernetes binaries Coil's tests and kubelet labs run: the
// control plane (kube-apiserver, kube-controller-manager, kube-scheduler), kubectl and
// the kubelet. It is a separate module so the main module does not depend on
// k8s.io/kubernetes; `make kube-bins` builds them from here in one `go build` (shared
// packages compile once) and caches them per machine.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
