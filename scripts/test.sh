#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the lit suite
# (dialect, passes, frontend, codegen, CLI, docs), the GoogleTest units, the
# pytest suite (numerics against PyTorch/NumPy, runtime errors), then the
# sanitized runtime-only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
BUILD_DIR=${KILN_BUILD_DIR:-build}
# ctest runs a test per core at once: the cores are shared throughout, so
# OpenMP's threads sleep when they wait (kiln would choose this itself only
# when another test is running at the moment it starts; docs/threads.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)"
# The runtime alone, as deployed: sanitized build, find_package(kiln),
# examples/deploy and, through the C API, examples/deploy-c (also from
# several threads), corrupted artifacts.
scripts/runtime-checks.sh
# Every file format the runtime reads, fuzzed briefly (docs/fuzzing.md;
# scripts/fuzz.sh SECONDS runs them at length).
scripts/fuzz.sh 30
# The README's demo command must keep working too.
scripts/demo.sh > "${KILN_BUILD_DIR:-build}/demo.log"
echo "test.sh: demo ran (output in ${KILN_BUILD_DIR:-build}/demo.log)"
