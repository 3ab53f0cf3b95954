#!/usr/bin/env bash
# Checks of the runtime on its own, as it is deployed:
#  1. it configures and builds without MLIR/LLVM (-DKILN_BUILD_COMPILER=OFF),
#     here with AddressSanitizer and UndefinedBehaviorSanitizer;
#  2. it installs as a CMake package, and examples/deploy builds against it
#     with find_package(kiln) and links no MLIR/LLVM code;
#  3. the sanitized deploy program runs artifacts made by the main build,
#     bit-identically to `kiln run`, and rejects corrupted artifacts and
#     inputs with clean errors (scripts/runtime_checks.py);
#  4. the C API: libkiln.so exports kiln_* alone, examples/deploy-c (plain
#     C) builds against the package with CMake and with pkg-config, and
#     runs under the sanitizers like the C++ program, from several threads
#     at once, and generates the tokens of a greedy loop over `kiln run`;
#  5. examples/deploy-train (C++, kiln::runtime + kiln::mpi from the
#     package) fine-tunes an artifact: the weights of kiln.Trainer, and
#     under `mpirun -np 2` the same bytes.
# Needs the main build (build/bin/kiln) first; scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=${KILN_BUILD_DIR:-build}
ASAN=${KILN_ASAN_BUILD_DIR:-build-asan}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

cmake -G Ninja -S . -B "$ASAN" -DKILN_BUILD_COMPILER=OFF -DKILN_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$SAN" \
  -DCMAKE_INSTALL_PREFIX="$PWD/$ASAN/prefix" >/dev/null
cmake --build "$ASAN"
cmake --install "$ASAN" >/dev/null
cmake -G Ninja -S examples/deploy -B "$ASAN/deploy" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_PREFIX_PATH="$PWD/$ASAN/prefix" >/dev/null
cmake --build "$ASAN/deploy"

DEPLOY="$ASAN/deploy/kiln-deploy"
if nm -C "$DEPLOY" | grep -qE ' (mlir|llvm)::'; then
  echo "runtime-checks: kiln-deploy contains MLIR/LLVM code" >&2
  exit 1
fi
if ldd "$DEPLOY" | grep -qiE 'libLLVM|libMLIR'; then
  echo "runtime-checks: kiln-deploy links an MLIR/LLVM library" >&2
  exit 1
fi
echo "runtime-checks: the deployed runtime has no MLIR/LLVM dependency"

LIBKILN="$ASAN/prefix/lib/libkiln.so"
if nm -D --defined-only "$LIBKILN" | awk '{print $NF}' | grep -v '^kiln_' |
    grep -q .; then
  echo "runtime-checks: libkiln.so exports more than the C API:" >&2
  nm -D --defined-only "$LIBKILN" | awk '{print $NF}' | grep -v '^kiln_' |
    head >&2
  exit 1
fi
cmake -G Ninja -S examples/deploy-c -B "$ASAN/deploy-c" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$SAN" \
  -DCMAKE_PREFIX_PATH="$PWD/$ASAN/prefix" >/dev/null
cmake --build "$ASAN/deploy-c"
DEPLOY_C="$ASAN/deploy-c/kiln-deploy-c"
# The same program with nothing but pkg-config and a C compiler.
cc -std=c11 -Wall -Werror $SAN examples/deploy-c/main.c -o "$ASAN/deploy-c/pc" \
  $(PKG_CONFIG_PATH="$PWD/$ASAN/prefix/lib/pkgconfig" \
    pkg-config --cflags --libs kiln) -lpthread \
  -Wl,-rpath,"$PWD/$ASAN/prefix/lib"
echo "runtime-checks: libkiln.so exports the C API alone; examples/deploy-c" \
  "builds with CMake and with pkg-config"
cmake -G Ninja -S examples/deploy-train -B "$ASAN/deploy-train" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$SAN" \
  -DCMAKE_PREFIX_PATH="$PWD/$ASAN/prefix" >/dev/null
cmake --build "$ASAN/deploy-train"
echo "runtime-checks: examples/deploy-train builds against kiln::runtime" \
  "and kiln::mpi"
/usr/bin/python3 scripts/runtime_checks.py "$MAIN/bin/kiln" "$DEPLOY" \
  "$DEPLOY_C" "$ASAN/deploy-train/kiln-deploy-train"
