#!/usr/bin/env bash
# Installs every system package kiln needs (Debian 12). Idempotent: packages
# already present are skipped, and apt-get update runs only when something is
# missing.
set -euo pipefail

PACKAGES=(
  cmake ninja-build ccache g++ lld
  libmlir-19-dev mlir-19-tools llvm-19-dev llvm-19-tools
  libgtest-dev zlib1g-dev libzstd-dev
  libdnnl-dev libflatbuffers-dev flatbuffers-compiler pybind11-dev python3-dev
  python3-numpy python3-torch python3-pytest libopenblas0-pthread
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
