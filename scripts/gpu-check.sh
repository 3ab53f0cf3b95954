#!/usr/bin/env bash
# The CUDA backend on a real GPU (docs/cuda.md), in two steps.
#
#   scripts/gpu-check.sh --prepare
#       Here, where the build and nvcc are: fills build/gpu-check/ (about
#       25 MiB) with the runtime-only check programs, the shared libraries
#       a bare GPU machine may lack, and the artifacts, their CUDA kernels
#       compiled in — GPT-2 small for the tests, the Shakespeare model, and
#       GPT-2 124M's kernels (its random weights are written on the GPU
#       machine, 500 MB that need not travel).
#   scripts/gpu-check.sh
#       On the GPU machine, from a copy of the checkout carrying
#       build/gpu-check (it needs the NVIDIA driver, not the CUDA toolkit,
#       nor a package registry), in under five minutes on an H100/H200:
#       1. the device tests: GPT-2 small's forward, loss and gradients and
#          three training steps on the GPU against the CPU to 1e-4, with
#          matrix products on cuBLASLt, then on kiln's own kernel;
#       2. the Shakespeare model trained 200 steps on the GPU: the loss falls;
#       3. GPT-2 124M, B=8 T=1024: forward and training-step tokens/s on the
#          GPU (and the CPU, for scale), the share of matrix products in the
#          GPU's kernel time; then the GPU with kiln's matmul kernel.
#       cuBLASLt is found as $KILN_CUBLASLT, on the loader's path, or in
#       the machine's CUDA or Python (nvidia-cublas) folders.
#       Without a GPU it says so and stops (the suite's emulated tests are
#       then the evidence).
set -euo pipefail
cd "$(dirname "$0")/.."
G=build/gpu-check
DATA=${KILN_DATA:-../shared/data}

if [[ ${1:-} == --prepare ]]; then
  ninja -C build kiln kiln-cuda-device-tests kiln-cuda-check kiln-cuda-device-artifacts
  rm -rf "$G"
  mkdir -p "$G/bin" "$G/lib" "$G/artifacts"
  cp build/bin/kiln-cuda-device-tests build/bin/kiln-cuda-check "$G/bin/"
  strip "$G"/bin/*
  # Shared libraries beyond the C and C++ runtimes (oneDNN, OpenMP,
  # SentencePiece): a machine built for CUDA need not have Debian's.
  for lib in $(ldd build/bin/kiln-cuda-check | awk '/=> \// {print $3}'); do
    case $(basename "$lib") in
      libc.so*|libm.so*|libstdc++*|libgcc_s*|ld-linux*|libdl.so*|libpthread*) ;;
      *) cp -L "$lib" "$G/lib/" ;;
    esac
  done
  # Packed (oneDNN is 40 MB): the whole folder must travel within 64 MiB.
  tar -C "$G" -cJf "$G/lib.tar.xz" lib
  rm -rf "$G/lib"
  cp build/test/cuda/gpt2-cuda.kart build/test/cuda/gpt2.kart "$G/artifacts/"
  cp "$DATA/tinyshakespeare.txt" "$G/artifacts/"
  echo "gpu-check: the Shakespeare model (one CPU step, for its tokenizer)"
  build/bin/kiln train examples/gpt2.kiln --data="$DATA/tinyshakespeare.txt" \
    --steps=1 -D n_layer=4 -D n_embd=128 -D n_head=4 -D n_positions=64 \
    --batch=16 --seq=64 --target=cpu,cuda --quiet \
    -o "$G/artifacts/shakespeare.kart"
  echo "gpu-check: GPT-2 124M's kernels"
  build/bin/kiln compile examples/gpt2.kiln --grad=loss --train-step --target=cpu,cuda --no-decode \
    --external-weights="$G/artifacts/gpt2-124m.safetensors" \
    -o "$G/artifacts/gpt2-124m.kart"
  rm -f "$G/artifacts/gpt2-124m.safetensors"
  echo "gpu-check: prepared $(du -sh "$G" | cut -f1) in $G; on the GPU machine run scripts/gpu-check.sh there, carrying $G"
  exit 0
fi

if [[ ! -x $G/bin/kiln-cuda-check ]]; then
  echo "gpu-check: $G is missing: run 'scripts/gpu-check.sh --prepare' where kiln is built, and carry $G" >&2
  exit 2
fi
if ! ls /dev/nvidia* >/dev/null 2>&1 && ! command -v nvidia-smi >/dev/null; then
  echo "gpu-check: no NVIDIA GPU on this machine: nothing to check here (the emulated CUDA tests in scripts/test.sh are the evidence)"
  exit 0
fi
LIB=$(mktemp -d)
trap 'rm -rf "$LIB"' EXIT
tar -C "$LIB" -xJf "$G/lib.tar.xz"
export LD_LIBRARY_PATH="$LIB/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KILN_CUDA_TEST_DIR="$PWD/$G/artifacts"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if [[ -z ${KILN_CUBLASLT:-} ]] && ! ldconfig -p 2>/dev/null | grep -q 'libcublasLt\.so\.1[23] '; then
  lt=$(find /usr/local /opt /usr/lib -name 'libcublasLt.so.1[23]' 2>/dev/null | head -1 || true)
  if [[ -n $lt ]]; then export KILN_CUBLASLT=$lt; fi
fi
echo "gpu-check: cuBLASLt: ${KILN_CUBLASLT:-libcublasLt.so.13 on the library path}"
start=$SECONDS
echo "== 1. device tests: GPT-2 small on the GPU against the CPU (1e-4)"
"$G/bin/kiln-cuda-device-tests" --gtest_brief=0
echo "== 1b. the same with kiln's matmul kernel instead of cuBLASLt"
KILN_CUBLASLT=off "$G/bin/kiln-cuda-device-tests" --gtest_brief=1
echo "== 2. the Shakespeare model, 200 steps on the GPU"
"$G/bin/kiln-cuda-check" train "$G/artifacts/shakespeare.kart" \
  "$G/artifacts/tinyshakespeare.txt" 200
echo "== 3. GPT-2 124M, B=8 T=1024"
"$G/bin/kiln-cuda-check" bench "$G/artifacts/gpt2-124m.kart" 8 1024 3
echo "== 3b. GPT-2 124M with kiln's matmul kernel (no cuBLASLt)"
KILN_CUBLASLT=off KILN_CUDA_CHECK_SKIP_CPU=1 \
  "$G/bin/kiln-cuda-check" bench "$G/artifacts/gpt2-124m.kart" 8 1024 1
echo "gpu-check: passed in $((SECONDS - start)) s"
