#!/bin/sh
# Move the pods of pool OLD to pool NEW without downtime (docs/operations.md, "Moving
# pods to another pool"). Two steps, with the pods' restarts between them:
#
#   migrate-pool.sh start OLD NEW [SUBNET...]  create NEW (when SUBNETs are given; a rerun
#                                              finds it made), then disable OLD
#   ... restart the pods that hold OLD addresses, at your pace ...
#   migrate-pool.sh finish OLD [TIMEOUT]       wait (default 600 s) until OLD holds no
#                                              address and no block, then delete it
#
# COILCTL is the coilctl command with its global flags (default: coilctl), e.g.
# COILCTL="coilctl --etcd-endpoints https://etcd:2379 --etcd-cacert ca.pem".
# POLL is the seconds between two looks at OLD (default 5).
set -eu

ctl() { ${COILCTL:-coilctl} "$@"; }

case "${1:-}" in
start)
	[ $# -ge 3 ] || { echo "usage: $0 start OLD NEW [SUBNET...]" >&2; exit 2; }
	old=$2 new=$3
	shift 3
	if [ $# -gt 0 ] && ! ctl pool show "$new" >/dev/null 2>&1; then
		ctl pool create "$new" "$@"
	fi
	ctl pool show "$new" >/dev/null # NEW must exist: exit 3 otherwise
	# From here on no pod gets an address of OLD. A pod whose pool choice names OLD
	# gets one of the next pool configured for it (namespace annotation, network config
	# "pool", coild --default-pool); with none, its ADD is refused: point that
	# configuration at NEW first.
	ctl pool disable "$old" --reason "moving to pool $new"
	ctl pool show "$old"
	;;
finish)
	[ $# -ge 2 ] || { echo "usage: $0 finish OLD [TIMEOUT]" >&2; exit 2; }
	old=$2
	end=$(($(date +%s) + ${3:-600}))
	# Nodes give OLD's empty blocks back on their next reconcile pass.
	until ctl pool show "$old" | grep -q '^Remaining: *nothing'; do
		if [ "$(date +%s)" -ge "$end" ]; then
			echo "$0: pool $old still holds addresses or blocks:" >&2
			ctl pool show "$old" >&2
			exit 1
		fi
		sleep "${POLL:-5}"
	done
	ctl pool delete "$old" --yes
	;;
*)
	echo "usage: $0 start OLD NEW [SUBNET...] | finish OLD [TIMEOUT]" >&2
	exit 2
	;;
esac
