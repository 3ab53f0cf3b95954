"""GPT-2 124M training step on CPU (forward, backward, AdamW update): kiln
beside PyTorch 1.13 in the same run, same shapes, same optimizer settings.
Reports median step times and their ratio, kiln's planned arena for
loss_grad next to the sum of its intermediates, and each process's peak
resident memory.

    /usr/bin/python3 bench/gpt2_train_step.py [--batch 4] [--seq 64] [--steps 6]

Dropout is off in both (PyTorch's reference model has none); the text is
tinyshakespeare read as bytes, with the GPT-2 vocabulary size.
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "python"))
from kiln_cli import KILN  # noqa: E402

CFG = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
           n_head=12)


def torch_steps(batch, seq, steps, threads):
    """Runs in a child process so its peak memory is its own."""
    import torch
    import torch.nn.functional as F

    import reference_models as ref
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    shapes = {"wte.weight": (50257, 768), "wpe.weight": (1024, 768),
              "ln_f.weight": (768,), "ln_f.bias": (768,)}
    for i in range(12):
        p = f"h.{i}."
        shapes.update({p + "ln_1.weight": (768,), p + "ln_1.bias": (768,),
                       p + "attn.c_attn.weight": (2304, 768),
                       p + "attn.c_attn.bias": (2304,),
                       p + "attn.c_proj.weight": (768, 768),
                       p + "attn.c_proj.bias": (768,),
                       p + "ln_2.weight": (768,), p + "ln_2.bias": (768,),
                       p + "mlp.c_fc.weight": (3072, 768),
                       p + "mlp.c_fc.bias": (3072,),
                       p + "mlp.c_proj.weight": (768, 3072),
                       p + "mlp.c_proj.bias": (768,)})
    w = {k: (torch.randn(s, generator=g) * 0.02).requires_grad_()
         for k, s in shapes.items()}
    ref.t = lambda ws, name: ws[name]  # float32, as users run it
    decay = [p for p in w.values() if p.dim() >= 2]
    rest = [p for p in w.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.0},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-4)
    times = []
    for _ in range(steps):
        x = torch.randint(0, 256, (batch, seq), generator=g)
        y = torch.randint(0, 256, (batch, seq), generator=g)
        t0 = time.perf_counter()
        opt.zero_grad()
        logits = ref.gpt2(w, CFG, x)
        F.cross_entropy(logits.reshape(-1, 50257), y.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(list(w.values()), 1.0)
        opt.step()
        times.append((time.perf_counter() - t0) * 1e3)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"ms": times, "rss": rss, "torch": torch.__version__}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--torch-child", action="store_true")
    args = ap.parse_args()
    threads = os.cpu_count()
    if args.torch_child:
        torch_steps(args.batch, args.seq, args.steps, threads)
        return
    defines = []
    for k, v in dict(resid_pdrop=0, embd_pdrop=0).items():
        defines += ["-D", f"{k}={v}"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        # The plan of loss_grad at this size (arena vs. no reuse), keeping
        # activations and recomputing them per block.
        arenas = {}
        for mode, extra in (("keep", []), ("recompute", ["--recompute"])):
            art = d / "g.kart"
            subprocess.run([KILN, "compile", ROOT / "examples" / "gpt2.kiln",
                            *defines, "--grad=loss", *extra,
                            f"--external-weights={d / 'g.safetensors'}",
                            "-o", art], check=True)
            inspect = subprocess.run(
                [KILN, "inspect", art, f"--dims=B={args.batch},T={args.seq}"],
                capture_output=True, text=True, check=True).stdout
            m = re.search(r"fn loss_grad.*?arena (\d+) bytes; all "
                          r"intermediates without reuse (\d+) bytes", inspect,
                          re.S)
            arenas[mode] = (int(m.group(1)), int(m.group(2)))
        arena, total = arenas["keep"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run(
            [KILN, "train", ROOT / "examples" / "gpt2.kiln",
             f"--data={ROOT / 'examples' / 'data' / 'tinyshakespeare.txt'}",
             "--tokenizer=byte", "-D", "vocab_size=50257", *defines,
             f"--steps={args.steps}", f"--batch={args.batch}",
             f"--seq={args.seq}", "--lr=1e-4", "--eval-fraction=0",
             f"--threads={threads}", f"--metrics={d / 'm.jsonl'}",
             "-o", d / "trained.kart"],
            check=True, stderr=subprocess.DEVNULL)
        kiln_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        kiln_rss = max(kiln_rss, before) * 1024
        rows = [json.loads(line) for line in
                (d / "m.jsonl").read_text().splitlines()]
    kiln_ms = statistics.median(r["step_ms"] for r in rows[1:])
    child = subprocess.run(
        [sys.executable, __file__, "--torch-child", f"--batch={args.batch}",
         f"--seq={args.seq}", f"--steps={args.steps}"],
        capture_output=True, text=True, check=True)
    t = json.loads(child.stdout.strip().splitlines()[-1])
    torch_ms = statistics.median(t["ms"][1:])
    print(f"GPT-2 124M training step (forward + backward + AdamW), "
          f"B={args.batch}, T={args.seq}, {threads} threads, median of "
          f"{args.steps - 1} steps after the first")
    print(f"  kiln     {kiln_ms:9.1f} ms")
    print(f"  PyTorch  {torch_ms:9.1f} ms   (torch {t['torch']}, float32)")
    print(f"  speedup  {torch_ms / kiln_ms:9.2f}x  (PyTorch time / kiln time)")
    print(f"  loss_grad arena {arena / 2**20:8.1f} MiB  vs  "
          f"{total / 2**20:.1f} MiB for all intermediates without reuse")
    print(f"  loss_grad arena with --recompute "
          f"{arenas['recompute'][0] / 2**20:8.1f} MiB")
    print(f"  peak RSS kiln train {kiln_rss / 2**20:8.1f} MiB, PyTorch "
          f"{t['rss'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
