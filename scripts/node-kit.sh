#!/usr/bin/env bash
# node-kit.sh builds the container runtime side of Coil's kubelet nodes (lab/kubenode) from
# the Go module proxy (module test/nodekit) and caches it per machine under
# ~/.cache/coil/nodekit/<versions>/ (or $COIL_NODE_KIT): containerd, containerd-shim-runc-v2,
# ctr (containerd v2), runc (cgo, seccomp: needs libseccomp-dev), crictl and critest
# (cri-tools). Cached binaries are reused; only missing ones are built. The Kubernetes node
# binaries (kubelet, kube-scheduler, kube-controller-manager) come from scripts/kube-bins.sh.
# Prints the directory on success.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT/test/nodekit"
export GOFLAGS=-buildvcs=false
ver() { go list -m -f '{{.Version}}' "$1"; }
CONTAINERD="$(ver github.com/containerd/containerd/v2)"
RUNC="$(ver github.com/opencontainers/runc)"
CRITOOLS="$(ver sigs.k8s.io/cri-tools)"
DIR="${COIL_NODE_KIT:-$HOME/.cache/coil/nodekit/containerd-$CONTAINERD-runc-$RUNC-critools-$CRITOOLS}"
mkdir -p "$DIR"
TMP="$(mktemp -d "$DIR/.build-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

missing() { for b in "$@"; do [[ -x "$DIR/$b" ]] || return 0; done; return 1; }
install_bins() { for b in "$@"; do mv -f "$TMP/$b" "$DIR/$b"; done; }
log() { echo "node-kit: $*" >&2; }

# containerd, its runc shim, ctr and crictl: one static build (CGO off, the snapshotters
# that need cgo or kernel modules left out), so shared packages compile once.
if missing containerd containerd-shim-runc-v2 ctr crictl; then
	log "building containerd $CONTAINERD (containerd, shim, ctr) and crictl $CRITOOLS (about 5 minutes cold)"
	start=$SECONDS
	CGO_ENABLED=0 go build -trimpath -tags "no_btrfs no_devmapper no_zfs no_dynamic_plugins urfave_cli_no_docs osusergo netgo static_build" \
		-ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRITOOLS" \
		-o "$TMP/" \
		github.com/containerd/containerd/v2/cmd/containerd \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
		github.com/containerd/containerd/v2/cmd/ctr \
		sigs.k8s.io/cri-tools/cmd/crictl
	install_bins containerd containerd-shim-runc-v2 ctr crictl
	log "containerd, shim, ctr, crictl built in $((SECONDS - start)) s"
fi

# runc needs cgo for seccomp (libseccomp-dev) and for its nsexec C code.
if missing runc; then
	if ! pkg-config --exists libseccomp 2>/dev/null; then
		echo "node-kit: runc needs libseccomp-dev and pkg-config (apt-get install libseccomp-dev pkg-config; scripts/setup.sh does it)" >&2
		exit 1
	fi
	log "building runc $RUNC (about 1.5 minutes cold)"
	start=$SECONDS
	CGO_ENABLED=1 go build -trimpath -tags seccomp -ldflags "-s -w -X main.version=${RUNC#v}" -o "$TMP/runc" github.com/opencontainers/runc
	install_bins runc
	log "runc built in $((SECONDS - start)) s"
fi

# critest is cri-tools' Ginkgo suite, a test binary.
if missing critest; then
	log "building critest $CRITOOLS"
	start=$SECONDS
	CGO_ENABLED=0 go test -c -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRITOOLS" -o "$TMP/critest" sigs.k8s.io/cri-tools/cmd/critest
	install_bins critest
	log "critest built in $((SECONDS - start)) s"
fi
echo "$DIR"
