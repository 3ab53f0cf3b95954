#!/usr/bin/python3
"""Draws docs/images/profile.png from a real trace: `kiln train --profile`
on the README's Shakespeare model (4 layers, 128 wide, batch 16 x 64), the
last training step's kernels on a timeline coloured by op, and the step's
time by op. Prints `kiln inspect --profile` of the same trace.

    /usr/bin/python3 bench/profile_picture.py [--out docs/images/profile.png]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KILN = os.environ.get("KILN", str(ROOT / "build" / "bin" / "kiln"))
DATA = Path(os.environ.get("KILN_DATA", ROOT.parent / "shared" / "data"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs/images/profile.png"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        subprocess.run(
            [KILN, "train", str(ROOT / "examples/gpt2.kiln"),
             f"--data={DATA / 'tinyshakespeare.txt'}", "--steps=4",
             "--batch=16", "--seq=64", "-D", "n_layer=4", "-D", "n_embd=128",
             "-D", "n_head=4", "-D", "n_positions=64", "--quiet",
             f"--profile={trace}", "-o", str(Path(tmp) / "m.kart")],
            check=True)
        events = [e for e in json.loads(trace.read_text())["traceEvents"]
                  if e["ph"] == "X"]
        print(subprocess.run([KILN, "inspect", f"--profile={trace}",
                              "--top=12"], check=True, capture_output=True,
                             text=True).stdout)
    step = [e for e in events if e["cat"] == "call" and
            e["name"] == "train_step"][-1]
    t0, t1 = step["ts"], step["ts"] + step["dur"]
    kernels = [e for e in events if e["cat"] == "kernel" and
               t0 <= e["ts"] <= t1]
    by_op = {}
    for k in kernels:
        by_op[k["name"]] = by_op.get(k["name"], 0) + k["dur"]
    ops = sorted(by_op, key=by_op.get, reverse=True)
    # tab10 without its grey, which marks the rest.
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors)
               if i != 7]
    colour = {op: palette[i] if i < len(palette) else (0.8, 0.8, 0.8)
              for i, op in enumerate(ops)}

    fig, (tl, bars) = plt.subplots(
        2, 1, figsize=(11, 6), gridspec_kw={"height_ratios": [1, 2.2]})
    for k in kernels:
        tl.barh(0, k["dur"] / 1000, left=(k["ts"] - t0) / 1000, height=0.8,
                color=colour[k["name"]], edgecolor="none")
    tl.set_yticks([])
    tl.set_xlim(0, (t1 - t0) / 1000)
    tl.set_xlabel("ms into the step")
    tl.set_title(f"one training step of GPT-2 (4 layers, 128 wide, 16 x 64 "
                 f"tokens): {len(kernels)} kernels, {step['dur'] / 1000:.1f}"
                 f" ms — `kiln train --profile` (forward, backward, update)",
                 fontsize=10)
    shown = ops[:12][::-1]
    bars.barh(range(len(shown)), [by_op[o] / 1000 for o in shown],
              color=[colour[o] for o in shown])
    bars.set_yticks(range(len(shown)))
    bars.set_yticklabels(shown, fontsize=9)
    bars.set_xlabel("ms in the step, by op")
    total = sum(by_op.values())
    for i, o in enumerate(shown):
        bars.text(by_op[o] / 1000, i, f" {100 * by_op[o] / total:.0f}%",
                  va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
