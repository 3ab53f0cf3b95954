#!/usr/bin/env bash
# The main demo: build kiln; train a small character-level GPT on
# tinyshakespeare (1,500 steps, about 1m15s on 2 cores; the loss falls, a
# loss curve is drawn) and sample text from it; compile the four example models (GPT-2,
# BERT, T5, Llama) at their published default sizes and show a parameter
# summary and an excerpt of the IR of each; then compile a real trained
# checkpoint (stories260K) with its tokenizer into an artifact, inspect it
# and let it tell a story.
#
# The data sets are read from ../shared/data beside the checkout, or from
# $KILN_DATA (docs/data.md says what each file is and where it comes from).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${KILN_DATA:-../shared/data}
for f in tinyshakespeare.txt stories260K.bin tok512.bin; do
  if [ ! -f "$DATA/$f" ]; then
    echo "demo: $DATA/$f is missing: the demo reads the data sets from ../shared/data beside the checkout, or from \$KILN_DATA (see docs/data.md)" >&2
    exit 1
  fi
done
scripts/install-deps.sh
scripts/build.sh >/dev/null
KILN=${KILN_BUILD_DIR:-build}/bin/kiln
mkdir -p build/demo

echo "==== kiln train: a character-level GPT (4 layers, 128 wide) on tinyshakespeare ===="
rm -rf build/demo/shakespeare
"$KILN" train examples/gpt2.kiln --data="$DATA/tinyshakespeare.txt" \
  -D n_layer=4 -D n_embd=128 -D n_head=4 -D n_positions=64 \
  --steps=1500 --batch=16 --seq=64 --lr=3e-3 --eval-every=250 --seed=1 \
  --checkpoint-dir=build/demo/shakespeare --checkpoint-every=500 \
  --metrics=build/demo/shakespeare/metrics.jsonl \
  --plot=build/demo/shakespeare/loss.png
echo "---- kiln generate build/demo/shakespeare/gpt2-trained.kart --prompt=\"ROMEO:\" --temperature=0.8 ----"
"$KILN" generate build/demo/shakespeare/gpt2-trained.kart --prompt="ROMEO:" \
  --max-tokens=300 --temperature=0.8 --seed=1
echo "(loss curve: build/demo/shakespeare/loss.png; per-step metrics: build/demo/shakespeare/metrics.jsonl)"

for model in gpt2 bert t5 llama; do
  echo
  echo "==== examples/$model.kiln ===================================================="
  # Full outputs go to files first: cutting a pipe short would stop the demo.
  "$KILN" compile "examples/$model.kiln" --emit=params -o "build/demo/$model.params.txt"
  "$KILN" compile "examples/$model.kiln" -o "build/demo/$model.mlir"
  head -n 8 "build/demo/$model.params.txt"
  echo "  ..."
  tail -n 1 "build/demo/$model.params.txt"
  echo "---- IR of forward (first ops; all of it in build/demo/$model.mlir) ----"
  awk '/func.func @forward/{p=1} p{print; n++} n>13{exit}' "build/demo/$model.mlir"
done
echo
echo "==== a 2-layer GPT-2 with -D overrides ========================================="
"$KILN" compile examples/gpt2.kiln -D n_layer=2 -D n_embd=128 -D n_head=4 --emit=params | tail -n 1

echo
echo "==== stories260K: a trained Llama and its tokenizer, compiled and run on the CPU ===="
"$KILN" compile examples/llama.kiln --weights="$DATA/stories260K.bin" \
  --tokenizer="$DATA/tok512.bin" -o build/demo/stories260K.kart
"$KILN" inspect build/demo/stories260K.kart --dims=B=1,T=64
echo "---- kiln generate build/demo/stories260K.kart --prompt=\"Once upon a time\" --temperature=0 --max-tokens=200 ----"
"$KILN" generate build/demo/stories260K.kart --prompt="Once upon a time" \
  --temperature=0 --max-tokens=200
echo "---- sampled: --prompt=\"The little dog\" --temperature=0.8 --top-p=0.9 --seed=1 ----"
"$KILN" generate build/demo/stories260K.kart --prompt="The little dog" \
  --max-tokens=200 --temperature=0.8 --top-p=0.9 --seed=1
