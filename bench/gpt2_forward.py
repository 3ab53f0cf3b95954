"""GPT-2 124M forward on CPU: kiln beside PyTorch 1.13, same weights, same
machine, same run. Reports the median latencies and their ratio, kiln's
arena size next to the sum of its intermediates, and the largest difference
between the two outputs.

    /usr/bin/python3 bench/gpt2_forward.py [--batch 1] [--seq 128] [--repeat 10]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test" / "python"))
import reference_models as ref  # noqa: E402
from kiln_cli import KILN, compile_model  # noqa: E402
from test_default_sizes import weights  # noqa: E402


def torch_gpt2(w, tokens):
    """The reference model in float32, as PyTorch users would run it."""
    saved = torch.get_default_dtype()
    t32 = {k: torch.from_numpy(v) for k, v in w.items()}
    ref_t = ref.t
    ref.t = lambda ws, name: t32[name]
    try:
        with torch.no_grad():
            return ref.gpt2(w, dict(n_embd=768, n_head=12, n_layer=12), tokens)
    finally:
        ref.t = ref_t
        torch.set_default_dtype(saved)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    w = weights("gpt2.kiln", 1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        art = compile_model(d, ROOT / "examples" / "gpt2.kiln", weights=w)
        tokens = np.random.default_rng(0).integers(
            0, 50257, (args.batch, args.seq)).astype(np.int32)
        np.save(d / "tokens.npy", tokens)
        inspect = subprocess.run(
            [KILN, "inspect", art, f"--dims=B={args.batch},T={args.seq}"],
            capture_output=True, text=True, check=True).stdout
        m = re.search(r"fn forward.*?arena (\d+) bytes; all intermediates "
                      r"without reuse (\d+) bytes", inspect, re.S)
        arena, total = int(m.group(1)), int(m.group(2))
        r = subprocess.run(
            [KILN, "run", art, f"--input=tokens=@{d / 'tokens.npy'}",
             f"--output=@{d / 'out.npy'}", f"--repeat={args.repeat}",
             f"--threads={threads}"], capture_output=True, text=True,
            check=True)
        kiln_ms = float(re.search(r"median ([0-9.]+) ms", r.stderr).group(1))
        kiln_out = np.load(d / "out.npy")
    torch_gpt2(w, tokens)  # warm-up
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        out = torch_gpt2(w, tokens)
        times.append((time.perf_counter() - t0) * 1e3)
    torch_ms = statistics.median(times)
    diff = float(np.max(np.abs(out.numpy() - kiln_out)))
    print(f"GPT-2 124M forward, B={args.batch}, T={args.seq}, {threads} "
          f"threads, median of {args.repeat}")
    print(f"  kiln     {kiln_ms:9.1f} ms")
    print(f"  PyTorch  {torch_ms:9.1f} ms   (torch {torch.__version__})")
    print(f"  speedup  {torch_ms / kiln_ms:9.2f}x  (PyTorch time / kiln time)")
    print(f"  arena    {arena / 2**20:9.1f} MiB  vs  {total / 2**20:.1f} MiB "
          f"for all intermediates without reuse ({total / arena:.1f}x)")
    print(f"  max |kiln - PyTorch| = {diff:.2e}")


if __name__ == "__main__":
    main()
