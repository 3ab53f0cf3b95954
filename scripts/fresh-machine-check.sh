#!/usr/bin/env bash
# Checks that kiln builds and runs on a fresh Debian 12 machine, which has
# only what the image ships: CI runs on a developer machine, where a package
# installed by hand hides a missing install step.
#
# Builds a minimal Debian 12 root with debootstrap in a temporary folder
# (from this machine's own apt mirror), copies the checkout (tracked and
# untracked files, no build/) and the data sets into it, and inside runs
# scripts/install-deps.sh, scripts/build.sh and scripts/smoke-test.sh; with
# --full, then the README's test command, scripts/test.sh (every test and
# the demo). Prints each phase's time and the result; removes the root on
# every exit path.
#
#   sudo scripts/fresh-machine-check.sh [--full] [--keep]   # --keep: leave the root
#
# Needs root (debootstrap, chroot, mknod, mount), network access to the
# mirror and about 6 GiB in $TMPDIR (default /var/tmp). Takes about 12
# minutes on 2 cores, 25 with --full.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$(pwd)
KEEP=0
FULL=0
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    --full) FULL=1 ;;
    *) echo "usage: scripts/fresh-machine-check.sh [--full] [--keep]" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" -eq 0 ] || { echo "fresh-machine-check: needs root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "fresh-machine-check: debootstrap is missing; run scripts/install-deps.sh" >&2; exit 1; }
DATA=${KILN_DATA:-$ROOT_DIR/../shared/data}
for f in stories260K.bin tok512.bin tinyshakespeare.txt; do
  [ -f "$DATA/$f" ] || { echo "fresh-machine-check: $DATA/$f is missing (set KILN_DATA)" >&2; exit 1; }
done

# The first mirror this machine's apt sources list for a suite (one-line
# .list entries or deb822 .sources stanzas).
mirror_for() {
  local suite=$1
  {
    grep -hsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      awk -v s="$suite" '{ i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == s) print $i }'
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk -v s="$suite" 'BEGIN { RS = "" }
        { uri = ""; deb = 0; ok = 0; n = split($0, L, "\n")
          for (k = 1; k <= n; k++) {
            if (L[k] ~ /^Types:/ && L[k] ~ /[[:space:]]deb([[:space:]]|$)/) deb = 1
            if (L[k] ~ /^URIs:/) { split(L[k], a, " "); uri = a[2] }
            if (L[k] ~ /^Suites:/) { m = split(L[k], b, " "); for (j = 2; j <= m; j++) if (b[j] == s) ok = 1 }
          }
          if (deb && ok && uri != "") print uri }' "$f"
    done
  } | head -n 1
}
MIRROR=$(mirror_for bookworm)
SECURITY=$(mirror_for bookworm-security)
[ -n "$MIRROR" ] || { echo "fresh-machine-check: no Debian 12 (bookworm) mirror in this machine's apt sources" >&2; exit 1; }

NEWROOT=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-fresh.XXXXXX")
# Unmount everything under the new root, deepest first, then remove it. The
# root never shares a mount with this machine's /dev: device nodes are made
# inside it, and only a fresh proc is mounted.
cleanup() {
  local status=$?
  set +e
  rm -f "$NEWROOT.debootstrap.log"
  awk -v r="$NEWROOT" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/self/mounts |
    sort -r | while read -r m; do umount "$m" || umount -l "$m"; done
  if awk -v r="$NEWROOT" '$2 == r || index($2, r "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
    echo "fresh-machine-check: mounts remain under $NEWROOT; not removing it" >&2
  elif [ $KEEP -eq 1 ]; then
    echo "fresh-machine-check: kept the root in $NEWROOT"
  else
    rm -rf --one-file-system "$NEWROOT"
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

phase_start=$SECONDS
phase() {
  echo "fresh-machine-check: [$((SECONDS - phase_start))s] $*"
}

phase "debootstrap bookworm from $MIRROR into $NEWROOT"
debootstrap --variant=minbase bookworm "$NEWROOT" "$MIRROR" >"$NEWROOT.debootstrap.log" 2>&1 ||
  { tail -n 30 "$NEWROOT.debootstrap.log" >&2; rm -f "$NEWROOT.debootstrap.log"; exit 1; }
rm -f "$NEWROOT.debootstrap.log"

# apt inside the root: this machine's mirror, and /dev/null.
{
  echo "deb $MIRROR bookworm main"
  echo "deb $MIRROR bookworm-updates main"
  [ -n "$SECURITY" ] && echo "deb $SECURITY bookworm-security main"
} >"$NEWROOT/etc/apt/sources.list"
mkdir -p "$NEWROOT/dev"
for dev in "null 1 3" "zero 1 5" "random 1 8" "urandom 1 9"; do
  set -- $dev
  if [ ! -c "$NEWROOT/dev/$1" ]; then
    rm -f "$NEWROOT/dev/$1"
    mknod -m 666 "$NEWROOT/dev/$1" c "$2" "$3"
  fi
done
cp /etc/resolv.conf "$NEWROOT/etc/resolv.conf" 2>/dev/null || true
mount -t proc proc "$NEWROOT/proc"
# Terminals for the tests that drive kiln through a pty: a devpts instance
# of the root's own (newinstance), not this machine's.
mkdir -p "$NEWROOT/dev/pts"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$NEWROOT/dev/pts"
rm -f "$NEWROOT/dev/ptmx"
ln -s pts/ptmx "$NEWROOT/dev/ptmx"

phase "copying the checkout and the data sets"
mkdir -p "$NEWROOT/work/main" "$NEWROOT/work/shared/data"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$NEWROOT/work/main"
# Every data set the tests read (docs/data.md), GPT-2's tokenizer included.
cp -r "$DATA"/. "$NEWROOT/work/shared/data/"

in_root() {
  chroot "$NEWROOT" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive /bin/bash -c "cd /work/main && $*"
}
phase "scripts/install-deps.sh"
in_root scripts/install-deps.sh >"$NEWROOT/install.log" 2>&1 ||
  { tail -n 30 "$NEWROOT/install.log" >&2; phase "FAILED: install-deps"; exit 1; }
phase "scripts/build.sh"
in_root scripts/build.sh >"$NEWROOT/build.log" 2>&1 ||
  { tail -n 40 "$NEWROOT/build.log" >&2; phase "FAILED: build"; exit 1; }
phase "scripts/smoke-test.sh"
in_root scripts/smoke-test.sh 2>&1 | tee "$NEWROOT/smoke.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || { phase "FAILED: smoke test"; exit 1; }
if [ $FULL -eq 1 ]; then
  phase "scripts/test.sh (the README's test command: every test and the demo)"
  in_root scripts/test.sh >"$NEWROOT/test.log" 2>&1 ||
    { tail -n 60 "$NEWROOT/test.log" >&2; phase "FAILED: scripts/test.sh"; exit 1; }
  grep -E "tests passed|runtime-checks: passed|demo ran" "$NEWROOT/test.log"
  phase "PASSED: install-deps, build, smoke test and scripts/test.sh on a fresh Debian 12 root"
else
  phase "PASSED: install-deps, build and smoke test on a fresh Debian 12 root"
fi
