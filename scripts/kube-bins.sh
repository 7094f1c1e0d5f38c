#!/usr/bin/env bash
# kube-bins.sh builds the Kubernetes binaries of the tests and kubelet labs from the Go
# module proxy (module test/kube) and caches them per machine under
# ~/.cache/coil/kube/<version>/ (or $COIL_KUBE_BINS): kube-apiserver and kubectl (the
# integration tests), kubelet, kube-scheduler and kube-controller-manager (the kubelet
# nodes, lab/kubelab). Cached binaries are reused; the missing ones are built in ONE
# `go build`, so the packages they share compile once. Cold on 2 cores: about 6.5
# minutes for kube-apiserver alone; see docs/kubernetes.md for all five. Prints the
# directory on success.
set -euo pipefail
VERSION="${KUBE_VERSION:-v1.37.2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${COIL_KUBE_BINS:-$HOME/.cache/coil/kube/$VERSION}"
mkdir -p "$DIR"
minor="${VERSION#v1.}"; minor="${minor%%.*}"
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
cd "$ROOT/test/kube"
cmds=()
for cmd in ${KUBE_BINS:-kube-apiserver kubectl kubelet kube-scheduler kube-controller-manager}; do
	[[ -x "$DIR/$cmd" ]] || cmds+=("$cmd")
done
if [[ ${#cmds[@]} -gt 0 ]]; then
	echo "building ${cmds[*]} $VERSION into $DIR (several minutes cold)" >&2
	TMP="$(mktemp -d "$DIR/.build-XXXXXX")"
	trap 'rm -rf "$TMP"' EXIT
	pkgs=()
	for cmd in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
	start=$SECONDS
	# Same flags and environment as before kubelet joined (the build cache is shared).
	GOFLAGS=-buildvcs=false go build -trimpath -ldflags "$LDFLAGS" -o "$TMP/" "${pkgs[@]}"
	for cmd in "${cmds[@]}"; do mv -f "$TMP/$cmd" "$DIR/$cmd"; done
	echo "built ${cmds[*]} in $((SECONDS - start)) s" >&2
fi
echo "$DIR"
