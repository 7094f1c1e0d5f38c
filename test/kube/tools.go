//go:build tools

// Package kube pins the kube-apiserver and kubectl versions that Coil's
// Kubernetes integration tests run against. It is a separate module so the
// main module does not depend on k8s.io/kubernetes; `make kube-bins` builds
// both binaries from here and caches them per machine.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
