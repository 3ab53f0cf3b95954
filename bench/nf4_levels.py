#!/usr/bin/python3
"""Draws NF4's 16 levels and the values each code stands for, from kiln.

    /usr/bin/python3 bench/nf4_levels.py [--out docs/images/nf4-levels.png]

A ramp of 4,096 values in [-1, 1] (one NF4 block of 64 per row, each
block's absmax exactly 1) goes through kiln.quantize / kiln.dequantize, so
the picture shows what kiln computes: the level every input lands on, the
decision thresholds between levels, and the standard normal's quantiles the
levels were built from (QLoRA's construction). The int4 grid of the same
block (16 evenly spaced levels over [-1, 1]) is drawn beside it.
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("KILN_BUILD_DIR", ROOT / "build"))
sys.path.insert(0, str(BUILD / "python"))
import kiln  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" /
                                         "nf4-levels.png"))
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.linspace(-1, 1, 4096, dtype=np.float32).reshape(64, 64)
    x[:, 0], x[:, -1] = -1.0, 1.0  # every block's absmax is 1
    nf4 = kiln.dequantize(kiln.quantize(x, "nf4:double=false", name="w"),
                          "w").ravel()
    int4 = kiln.dequantize(kiln.quantize(x, "int4:group=64", name="w"),
                           "w").ravel()
    flat = x.ravel()
    order = np.argsort(flat)
    levels = np.unique(nf4)

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2),
                               gridspec_kw={"width_ratios": [3, 2]})
    a.plot(flat[order], nf4[order], color="#c0392b", lw=1.6,
           label="NF4 (kiln.dequantize)")
    a.plot(flat[order], int4[order], color="#7f8c8d", lw=1, ls="--",
           label="int4, same block")
    a.plot([-1, 1], [-1, 1], color="#bbb", lw=0.6)
    for v in levels:
        a.axhline(v, color="#c0392b", lw=0.3, alpha=0.5)
    a.set_xlabel("value / block absmax")
    a.set_ylabel("decoded value / block absmax")
    a.set_title("Each value maps to one of 16 levels")
    a.legend(loc="upper left", frameon=False)

    grid = np.linspace(-3, 3, 400)
    density = np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi)
    # The levels, mapped back to the normal's scale they came from: QLoRA
    # spreads them at quantiles and normalizes the outermost to ±1.
    scale = 2.73  # roughly the outermost quantile used, for the overlay
    b.fill_between(grid / scale, density, color="#d6eaf8",
                   label="standard normal (x / 2.73)")
    b.vlines(levels, 0, 0.45, color="#c0392b", lw=1.2, label="NF4 levels")
    b.vlines(np.unique(int4), 0, 0.2, color="#7f8c8d", lw=1,
             label="int4 levels")
    b.set_xlim(-1.05, 1.05)
    b.set_yticks([])
    b.set_title("Levels are dense where weights are")
    b.set_ylim(0, 0.62)
    b.legend(loc="upper center", ncol=3, frameon=False, fontsize=7.5)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: levels {np.round(levels, 4).tolist()}")


if __name__ == "__main__":
    main()
