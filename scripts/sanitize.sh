#!/usr/bin/env bash
# The whole suite under AddressSanitizer and UndefinedBehaviorSanitizer
# (docs/sanitizers.md): builds everything — runtime, compiler, tools, the
# Python module, the tests — with -fsanitize=address,undefined into
# build-san (KILN_SANITIZE=ON), then runs the lit suite, the GoogleTest
# programs, the MPI tests and pytest through ctest. Any sanitizer report
# fails its test (errors are not recoverable; leaks count, except the
# Python interpreter's own: test/lsan.supp).
#
#   scripts/sanitize.sh [CTEST ARGS...]    e.g. -R pytest, or -E mpi
#
# About an hour on 2 cores (half building, half testing); too long for the
# test command, so it runs before an issue is resolved.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${KILN_SAN_BUILD_DIR:-build-san}
cmake -G Ninja -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKILN_SANITIZE=ON >/dev/null
cmake --build "$B" -j "$(nproc)"
# Every sanitizer report ends its process with an error; stacks are
# symbolized. Out-of-memory in a test that asks for it (oversized inputs
# are refused before allocating) is not hidden: malloc fails as usual.
# allow_user_poisoning=0: LLVM's headers poison the free parts of their
# bump allocators when instrumented, which Debian's uninstrumented MLIR
# libraries then write into legitimately (a false use-after-poison).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:allow_user_poisoning=0:strict_string_checks=1:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
start=$(date +%s)
ctest --test-dir "$B" --output-on-failure -j "$(nproc)" "$@"
echo "sanitize: the suite passed under ASan and UBSan in $(($(date +%s) - start)) s"
