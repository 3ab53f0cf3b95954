#!/usr/bin/env bash
# The main demo: build kiln, compile the four example models (GPT-2, BERT, T5,
# Llama) at their published default sizes, and show a parameter summary and an
# excerpt of the IR of each.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh >/dev/null
KILN=${KILN_BUILD_DIR:-build}/bin/kiln
for model in gpt2 bert t5 llama; do
  echo
  echo "==== examples/$model.kiln ===================================================="
  "$KILN" compile "examples/$model.kiln" --emit=params | { head -n 8; echo "  ..."; tail -n 1; }
  echo "---- IR of forward (first 12 ops, see 'kiln compile examples/$model.kiln') ----"
  "$KILN" compile "examples/$model.kiln" | awk '/func.func @forward/{p=1} p{print; n++} n>13{exit}'
done
echo
echo "==== a 2-layer GPT-2 with -D overrides ========================================="
"$KILN" compile examples/gpt2.kiln -D n_layer=2 -D n_embd=128 -D n_head=4 --emit=params | tail -n 1
