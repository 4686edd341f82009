#!/bin/bash
# netlab.sh: a small internet on this machine for the network e2e tests, so
# no packet ever leaves it (the same layout as internal/testenv/netlab.go).
#
#   netlab.sh up TAG        make namespaces blh<TAG> ("host": the server under
#                           test runs here) and bli<TAG> ("internet"), joined
#                           by a veth pair
#   netlab.sh run TAG host|inet CMD...   run CMD in one of them (network
#                           namespace only: mounts, /sys and cgroups stay the
#                           host's, which the jail engine needs)
#   netlab.sh down TAG      remove both
#
# Addresses: the host is 198.51.100.1/24 with its default route via
# 198.51.100.2 (the internet's end). The internet holds 192.0.2.10 and
# 203.0.113.10 (public hosts), 10.99.0.10 (a private host) and 192.0.2.53
# (its DNS server), all on its end of the veth (no dummy interfaces: not every
# kernel has the module).
set -euo pipefail
cmd=${1:?usage: netlab.sh up|run|down TAG ...}
tag=${2:?TAG}
host=blh$tag
inet=bli$tag
case $cmd in
up)
	ip netns add "$host"
	ip netns add "$inet"
	ip link add "blv$tag" netns "$host" type veth peer name i0 netns "$inet"
	ip -n "$host" link set "blv$tag" name h0
	ip -n "$host" link set lo up
	ip -n "$host" link set h0 up
	ip -n "$host" addr add 198.51.100.1/24 dev h0
	ip -n "$host" route add default via 198.51.100.2
	ip -n "$inet" link set lo up
	ip -n "$inet" link set i0 up
	ip -n "$inet" addr add 198.51.100.2/24 dev i0
	for a in 192.0.2.10/24 192.0.2.53/32 203.0.113.10/24 10.99.0.10/24; do
		ip -n "$inet" addr add "$a" dev i0
	done
	;;
run)
	where=${3:?host|inet}
	shift 3
	case $where in
	host) ns=$host ;;
	inet) ns=$inet ;;
	*) echo "netlab.sh: run TAG host|inet CMD..." >&2; exit 2 ;;
	esac
	exec nsenter --net="/run/netns/$ns" -- "$@"
	;;
down)
	ip netns del "$host" 2>/dev/null || true
	ip netns del "$inet" 2>/dev/null || true
	;;
*)
	echo "netlab.sh: unknown command $cmd" >&2
	exit 2
	;;
esac
