#!/usr/bin/env bash
# A quick check that a build works end to end (run by
# scripts/fresh-machine-check.sh on a fresh Debian 12 root): compiles each
# example model into an artifact and runs its forward function, then
# compiles stories260K with its tokenizer and checks the story it tells.
# Reads the data sets from ../shared/data or $KILN_DATA.
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${KILN_BUILD_DIR:-build}/bin/kiln
DATA=${KILN_DATA:-../shared/data}
for f in stories260K.bin tok512.bin; do
  [ -f "$DATA/$f" ] || { echo "smoke-test: $DATA/$f is missing: the data sets are read from ../shared/data beside the checkout, or from \$KILN_DATA (docs/data.md)" >&2; exit 1; }
done
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

/usr/bin/python3 - "$OUT" <<'EOF'
import sys
import numpy as np
d = sys.argv[1]
np.save(f"{d}/tokens.npy", np.array([[1, 5, 9, 3, 7, 2, 4, 8]], np.int32))
np.save(f"{d}/mask.npy", np.array([[1, 1, 1, 1, 1, 1, 0, 0]], np.int32))
np.save(f"{d}/types.npy", np.zeros((1, 8), np.int32))
np.save(f"{d}/dec.npy", np.array([[0, 4, 2]], np.int32))
EOF
t=$OUT/tokens.npy
declare -A inputs=(
  [gpt2]="--input=tokens=@$t"
  [llama]="--input=tokens=@$t"
  [bert]="--input=input_ids=@$t --input=attention_mask=@$OUT/mask.npy --input=token_type_ids=@$OUT/types.npy"
  [t5]="--input=input_ids=@$t --input=attention_mask=@$OUT/mask.npy --input=decoder_input_ids=@$OUT/dec.npy"
)
for model in gpt2 bert t5 llama; do
  "$KILN" compile "examples/$model.kiln" -o "$OUT/$model.kart"
  # shellcheck disable=SC2086
  "$KILN" run "$OUT/$model.kart" ${inputs[$model]} --output=@"$OUT/$model.npy"
  /usr/bin/python3 -c "import numpy as np, sys; a = np.load(sys.argv[1]); assert np.isfinite(a).all(), sys.argv[1]; print(sys.argv[2], 'forward', a.shape, 'ok')" "$OUT/$model.npy" "$model"
done

"$KILN" compile examples/llama.kiln --weights="$DATA/stories260K.bin" \
  --tokenizer="$DATA/tok512.bin" -o "$OUT/stories.kart"
story=$("$KILN" generate "$OUT/stories.kart" --prompt="Once upon a time" \
  --temperature=0 --max-tokens=40)
echo "stories260K: $story"
case "$story" in
  "Once upon a time, there was a little girl named Lily. She loved to play"*) ;;
  *) echo "smoke-test: stories260K did not tell its story" >&2; exit 1 ;;
esac
echo "smoke-test: passed"
