#!/usr/bin/python3
"""Draws the block layouts of kiln's attention patterns.

    /usr/bin/python3 bench/attention_layouts.py [--T 4096] [--out docs/images/sparse-layouts.png]

Compiles a one-layer attention model per pattern and asks kiln which 64x64
blocks its kernels compute at sequence length T (`Model.attention_layout`,
the same as `kiln inspect --attention-layout`): dark blocks are computed
whole, light ones with a mask inside, white ones skipped. BigBird's random
blocks differ per head; two heads are drawn.
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

MODEL = """
model attn(T = 4096) {
  param x: f32[1, T, 64] = normal(1.0)
  fn forward() -> f32[1, T, 64] {
    return attention(x, x, x, heads = 2, CAUSAL PATTERN)
  }
}
"""

PANELS = [
    ("dense, causal", "causal = true", ""),
    ("sliding_window(512), causal", "causal = true",
     "pattern = sliding_window(512)"),
    ("sliding_window(256, global_tokens = 64)", "causal = false",
     "pattern = sliding_window(256, global_tokens = 64)"),
    ("block_sparse(64, 1, 1, random 3), head 0", "causal = false",
     "pattern = block_sparse(block = 64, local = 1, global = 1, random = 3, "
     "seed = 0)"),
    ("... the same, head 1", "causal = false",
     "pattern = block_sparse(block = 64, local = 1, global = 1, random = 3, "
     "seed = 0)"),
    ("strided(512), causal", "causal = true", "pattern = strided(512)"),
    ("fixed(512, summary = 64), causal", "causal = true",
     "pattern = fixed(512, 64)"),
]


def layout(causal, pattern, T, head):
    src = MODEL.replace("CAUSAL", causal).replace(
        "PATTERN", (", " + pattern) if pattern else "")
    m = kiln.compile(src, defines={"T": T})
    lay = m.attention_layout(T)[0]
    heads = lay["heads"]
    h = heads[min(head, len(heads) - 1)]
    rows = h["layout"].splitlines()
    grid = np.array([[{"#": 2, "+": 1, ".": 0}[c] for c in r] for r in rows])
    return grid, h["density"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" /
                                         "sparse-layouts.png"))
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap(["#ffffff", "#9ecae1", "#08519c"])
    fig, grid_axes = plt.subplots(2, 4, figsize=(12, 6.8))
    axes = grid_axes.flatten()
    for ax in axes[len(PANELS):]:
        ax.axis("off")
    for i, (ax, (title, causal, pattern)) in enumerate(zip(axes, PANELS)):
        grid, density = layout(causal, pattern, args.T, 1 if "head 1" in
                               title else 0)
        ax.imshow(grid, cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        ax.set_title(f"{title}\n{density:.1%} of blocks", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("key blocks", fontsize=7)
        if i % 4 == 0:
            ax.set_ylabel("query blocks", fontsize=7)
    fig.suptitle(f"Blocks kiln's attention kernels compute at T = {args.T} "
                 "(64 x 64 each; dark: whole, light: masked inside, white: "
                 "skipped)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95), h_pad=2.5)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
