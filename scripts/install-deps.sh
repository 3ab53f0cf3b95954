#!/usr/bin/env bash
# Installs every system package kiln needs (Debian 12). Idempotent: packages
# already present are skipped, and apt-get update runs only when something is
# missing.
set -euo pipefail

# Everything the build, the tests, the demo and the benchmarks use, checked by
# scripts/fresh-machine-check.sh on a fresh Debian 12 root.
PACKAGES=(
  # build
  cmake ninja-build ccache g++ lld
  libmlir-19-dev mlir-19-tools llvm-19-dev llvm-19-tools
  zlib1g-dev libzstd-dev
  libdnnl-dev libflatbuffers-dev flatbuffers-compiler pybind11-dev python3-dev
  # SentencePiece tokenizers (the library; spm_train/spm_encode for the tests)
  libsentencepiece-dev sentencepiece pkg-config
  # Debian's oneDNN CMake package looks for OpenCL when it is found
  ocl-icd-opencl-dev opencl-c-headers
  # tests and the Python package
  libgtest-dev python3-numpy python3-torch python3-pytest libopenblas0-pthread
  # data-parallel training (runtime/train/Mpi.cpp) and its tests under
  # mpirun, also between two network namespaces (scripts/mpi-netns-check.sh)
  libopenmpi-dev openmpi-bin iproute2
  # coverage-guided fuzzing (scripts/fuzz.sh): clang, libFuzzer, its OpenMP
  clang-14 libclang-rt-14-dev libomp-14-dev
  # pip install . (test/python/test_packaging.py: a fresh venv, offline)
  python3-venv python3-pip
  # bench/ (plots) and scripts/fresh-machine-check.sh
  python3-matplotlib debootstrap
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
