"""GPT-2 small from Python: compile it, run it, train a few steps, generate.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/gpt2_small.py

The model is examples/gpt2.kiln at its published size (124M parameters);
the training text is tinyshakespeare read as bytes (ids 0-255 of GPT-2's
50257-token vocabulary), so this shows the API rather than a useful model.
The text is read from ../shared/data beside the checkout, or from $KILN_DATA.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

import kiln

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("KILN_DATA", ROOT.parent / "shared" / "data"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()

    t0 = time.perf_counter()
    model = kiln.compile(ROOT / "examples" / "gpt2.kiln", seed=0, grad="loss",
                         defines={"resid_pdrop": 0.0, "embd_pdrop": 0.0})
    n = sum(p.size for p in model.parameters().values())
    print(f"compiled {model.name}: {n:,} parameters, functions "
          f"{[f['name'] for f in model.functions()]} "
          f"({time.perf_counter() - t0:.1f} s)")

    path = DATA / "tinyshakespeare.txt"
    if not path.is_file():
        sys.exit(f"{path} is missing: set KILN_DATA to the folder that holds "
                 f"tinyshakespeare.txt (see docs/data.md)")
    text = path.read_bytes()
    data = np.frombuffer(text, np.uint8).astype(np.int32)
    rng = np.random.default_rng(0)

    def batch():
        starts = rng.integers(0, len(data) - args.seq - 1, args.batch)
        x = np.stack([data[s:s + args.seq] for s in starts])
        y = np.stack([data[s + 1:s + args.seq + 1] for s in starts])
        return {"tokens": x, "targets": y}

    b = batch()
    logits = model.forward(tokens=b["tokens"])
    print(f"forward: logits {logits.shape}, loss "
          f"{model.loss(**b):.4f} (ln 50257 = {np.log(50257):.4f})")

    trainer = kiln.Trainer(model, kiln.AdamW(lr=3e-4), warmup=1,
                           total_steps=args.steps)
    for step in range(args.steps):
        t0 = time.perf_counter()
        loss = trainer.step(batch())
        print(f"step {step + 1}/{args.steps}: loss {loss:.4f}, lr "
              f"{trainer.last_lr:.2e}, {time.perf_counter() - t0:.2f} s")

    prompt = list(b"ROMEO:")
    out = model.generate(prompt, max_tokens=args.tokens, temperature=0)
    print(f"generated ids after {prompt}: {out.tolist()}")


if __name__ == "__main__":
    main()
