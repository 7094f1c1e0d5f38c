#!/usr/bin/env bash
# Installs what Coil's build, tests and demo need on a fresh Debian machine (as root).
# Idempotent: does nothing that is already done. `setup.sh test` adds what only the
# tests need (containerd, runc, iptables, nftables); `setup.sh tools` adds the linter.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools/bin"
mkdir -p "$TOOLS"

need_pkgs=()
command -v bird >/dev/null 2>&1 || need_pkgs+=(bird2)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v unshare >/dev/null 2>&1 || need_pkgs+=(util-linux)
command -v ping >/dev/null 2>&1 || need_pkgs+=(iputils-ping)
# The kubelet nodes (lab/kubelab): runc's seccomp needs libseccomp-dev (cgo) and
# pkg-config to build; portmap needs iptables inside the node namespaces.
command -v nsenter >/dev/null 2>&1 || need_pkgs+=(util-linux)
command -v pkg-config >/dev/null 2>&1 || need_pkgs+=(pkg-config)
[ -e /usr/include/seccomp.h ] || need_pkgs+=(libseccomp-dev)
command -v iptables >/dev/null 2>&1 || need_pkgs+=(iptables)
command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc)
if [ "${1:-}" = test ]; then
	# The tests of the installed conflist (test/runtimes): portmap's backends, and
	# Debian's containerd 1.6 with runc driving the plugin (`ctr run --cni`).
	command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
	command -v tc >/dev/null 2>&1 || need_pkgs+=(iproute2)
	command -v containerd >/dev/null 2>&1 || need_pkgs+=(containerd)
	command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: need Debian packages ${need_pkgs[*]} and root to install them" >&2
		exit 1
	fi
	echo "setup: installing ${need_pkgs[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

gobin() { # gobin NAME MODULE@VERSION
	[ -x "$TOOLS/$1" ] || GOBIN="$TOOLS" go install "$2"
}
gobin gotestsum gotest.tools/gotestsum@v1.13.0
gobin cnitool github.com/containernetworking/cni/cnitool@v1.3.1
gobin ptp github.com/containernetworking/plugins/plugins/main/ptp@v1.10.0
gobin host-local github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0
gobin portmap github.com/containernetworking/plugins/plugins/meta/portmap@v1.10.0
if [ "${1:-}" = tools ]; then
	gobin golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
fi
