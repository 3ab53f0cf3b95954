#!/usr/bin/python3
"""A GPT trained with a sliding window beside the same GPT with dense causal
attention, at sequence length 1,024 on tinyshakespeare.

    /usr/bin/python3 bench/sparse_training.py [--steps 600] [--out docs/images/sparse-training.png]

Runs `kiln train` twice with the same seed, data and schedule — once with
`--attention=sliding_window:128`, once dense — and draws both loss curves
(training loss per step, evaluation loss at the end) into one picture;
prints the final losses and throughput. Data: $KILN_DATA or ../shared/data
(tinyshakespeare.txt).
"""
import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("KILN_BUILD_DIR", ROOT / "build"))
DATA = Path(os.environ.get("KILN_DATA", ROOT.parent / "shared" / "data"))
MODEL = ["-D", "n_layer=4", "-D", "n_embd=128", "-D", "n_head=4",
         "-D", "n_positions=1024"]


def train(work, name, steps, extra):
    metrics = work / f"{name}.jsonl"
    cmd = [str(BUILD / "bin" / "kiln"), "train", str(ROOT / "examples" /
           "gpt2.kiln"), f"--data={DATA / 'tinyshakespeare.txt'}", *MODEL,
           "--seq=1024", "--batch=4", f"--steps={steps}", "--lr=3e-3",
           "--eval-every=50", "--eval-batches=4", "--seed=1",
           f"--metrics={metrics}", "-o", str(work / f"{name}.kart"), *extra]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" /
                                         "sparse-training.png"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = {"dense causal": train(work, "dense", args.steps, []),
                "sliding_window(128)": train(
                    work, "window", args.steps,
                    ["--attention=sliding_window:128"])}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in runs.items():
        steps = [r["step"] for r in rows if "loss" in r]
        ax.plot(steps, [r["loss"] for r in rows if "loss" in r],
                label=f"{name}, training", alpha=0.8)
        ev = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
        if ev:
            ax.plot(*zip(*ev), "o--", label=f"{name}, held out")
        last = rows[-1]
        tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
        print(f"{name}: final loss {last.get('loss'):.4f}, eval "
              f"{last.get('eval_loss', float('nan')):.4f}, "
              f"median {sorted(tps)[len(tps) // 2]:.0f} tokens/s")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per character)")
    ax.set_title("GPT (4 layers, 128 wide), sequence length 1,024, "
                 "tinyshakespeare", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
