#!/usr/bin/env bash
# Coverage-guided fuzzing of every input kiln reads (docs/fuzzing.md):
# builds the libFuzzer harnesses in fuzz/ with clang-14, AddressSanitizer
# and UndefinedBehaviorSanitizer into build-fuzz, then runs
# each for SECONDS (default 60) from its seed corpus fuzz/corpus/NAME (the
# frontend's: examples/ and test/frontend/ too), with
# the dictionary fuzz/dict/NAME.dict where there is one. New inputs go to
# build-fuzz/corpus/NAME (the seeds are never written). A crash, leak,
# timeout, an allocation over 1 GiB, or an input that makes kiln hold more
# heap than its harness's multiple of the input's size (AllocationBound in
# fuzz/Harness.h) stops the run, with the reproducer in build-fuzz/crashes/.
# Prints per harness the executions, the coverage and the most heap held
# for one input.
#
#   scripts/fuzz.sh [SECONDS] [NAME...]
set -euo pipefail
cd "$(dirname "$0")/.."
EACH=${1:-60}
shift || true
B=${KILN_FUZZ_BUILD_DIR:-build-fuzz}
HARNESSES=("$@")
[ ${#HARNESSES[@]} -gt 0 ] ||
  HARNESSES=(kiln kart safetensors npy llama2c tokenizer json checkpoint)
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
# The compiler is configured for the frontend's harness (only what the
# harnesses need is built).
CC=clang-14 CXX=clang++-14 cmake -G Ninja -S . -B "$B" -DKILN_FUZZ=ON \
  -DKILN_BUILD_COMPILER=ON -DKILN_BUILD_TESTS=OFF -DKILN_BUILD_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$SAN" \
  -DCMAKE_CXX_FLAGS="$SAN" >/dev/null
cmake --build "$B" --target $(printf 'kiln-fuzz-%s ' "${HARNESSES[@]}")
mkdir -p "$B/crashes"
# allow_user_poisoning=0: LLVM's headers poison the free parts of their
# bump allocators when instrumented, which Debian's uninstrumented MLIR
# libraries (the frontend's harness) then write into legitimately.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:allow_user_poisoning=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for h in "${HARNESSES[@]}"; do
  mkdir -p "$B/corpus/$h"
  dict=()
  [ -f "fuzz/dict/$h.dict" ] && dict=("-dict=fuzz/dict/$h.dict")
  seeds=("fuzz/corpus/$h")
  # The frontend's seeds: every model source of the repository.
  [ "$h" = kiln ] && seeds+=(examples test/frontend)
  if ! "$B/fuzz/kiln-fuzz-$h" -max_total_time="$EACH" -timeout=20 \
      -rss_limit_mb=4096 -malloc_limit_mb=1024 -print_final_stats=1 \
      -artifact_prefix="$B/crashes/$h-" "${dict[@]}" \
      "$B/corpus/$h" "${seeds[@]}" > "$B/$h.log" 2>&1; then
    echo "fuzz: $h FAILED (build-fuzz/crashes/$h-*):" >&2
    { grep -E "ERROR|SUMMARY|==[0-9]+==" "$B/$h.log" || tail -5 "$B/$h.log"; } | head -20 >&2
    status=1
    continue
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$B/$h.log" |
    grep -o '[0-9]*$' || echo 0)
  cov=$(grep -oE 'cov: [0-9]+' "$B/$h.log" | tail -1 | grep -o '[0-9]*')
  held=$(grep -oE 'fuzz-allocation: at most [0-9]+ heap bytes held for an input of [0-9]+ bytes' \
    "$B/$h.log" | tail -1 | sed 's/fuzz-allocation: at most /most held: /; s/ heap bytes held for an input of /, for an input of /')
  echo "fuzz: $h: $runs executions in ${EACH}s, $cov edges covered, ${held:-most held: ?}, no crash"
done
exit $status
