#!/usr/bin/env bash
# Data-parallel training between two "machines": two network namespaces on
# this one, joined by a veth pair, with MPI over TCP between them — the
# multi-machine path (docs/distributed.md), exercised for real.
#
#   scripts/mpi-netns-check.sh [BUILD_DIR]      # as root; ctest runs it
#
# Rank 0 runs in one namespace (10.77.X.1), rank 1 in the other
# (10.77.X.2); mpirun starts the remote rank through a launch agent that
# enters its namespace (where a cluster would use ssh), and the ranks talk
# over the veth addresses only (btl tcp, oob tcp). It runs kiln-mpi-tests:
# the collectives, and a small GPT-2 trained on the 2 ranks against one
# process, bit for bit. Exits 77 (skipped) where namespaces cannot be made
# (not root, no ip(8), no mpirun); everything it creates is removed on
# every exit path.
set -euo pipefail

BUILD=${1:-build}
TESTS="$BUILD/bin/kiln-mpi-tests"
skip() { echo "mpi-netns-check: skipped: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root to make network namespaces"
command -v ip >/dev/null || skip "no ip(8) (iproute2)"
command -v mpirun >/dev/null || skip "no mpirun (scripts/install-deps.sh)"
[ -x "$TESTS" ] || skip "no $TESTS (built with MPI and GoogleTest)"

# Names and a subnet of this run's own, so that runs side by side agree.
tag=$$
net=$((tag % 200 + 20))
A=kiln-a-$tag B=kiln-b-$tag
IPA=10.77.$net.1 IPB=10.77.$net.2
work=$(mktemp -d)
cleanup() {
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$A" 2>/dev/null || skip "cannot create network namespaces here"
ip netns add "$B"
ip link add "kv$tag"a type veth peer name "kv$tag"b
ip link set "kv$tag"a netns "$A"
ip link set "kv$tag"b netns "$B"
ip -n "$A" addr add "$IPA/24" dev "kv$tag"a
ip -n "$B" addr add "$IPB/24" dev "kv$tag"b
for ns in "$A" "$B"; do
  ip -n "$ns" link set lo up
done
ip -n "$A" link set "kv$tag"a up
ip -n "$B" link set "kv$tag"b up

# mpirun's launch agent: "HOST COMMAND..." runs COMMAND in HOST's namespace.
cat > "$work/agent" <<AGENT
#!/bin/sh
host=\$1; shift
case "\$host" in
  $IPA) ns=$A ;;
  $IPB) ns=$B ;;
  *) echo "mpi-netns-check: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
chmod +x "$work/agent"
printf '%s slots=1\n%s slots=1\n' "$IPA" "$IPB" > "$work/hosts"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "mpi-netns-check: rank 0 in $A ($IPA), rank 1 in $B ($IPB), MPI over TCP"
timeout 300 ip netns exec "$A" mpirun --hostfile "$work/hosts" -np 2 \
  --mca plm_rsh_agent "$work/agent" \
  --mca btl tcp,self --mca btl_tcp_if_include "10.77.$net.0/24" \
  --mca oob_tcp_if_include "10.77.$net.0/24" \
  "$TESTS"
echo "mpi-netns-check: passed"
