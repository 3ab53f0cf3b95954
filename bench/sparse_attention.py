#!/usr/bin/python3
"""Sparse attention beside dense attention, in kiln and in PyTorch.

    /usr/bin/python3 bench/sparse_attention.py [--quick] [--out docs/performance.md]

One attention layer, 12 heads x 64, batch 1, causal, at T = 4,096 to 32,768
(--quick: 4,096 and 8,192), forward and forward+backward, for three layouts:

  dense     kiln's blocked kernel on the causal pattern
  window    sliding_window(512)
  bigbird   block_sparse(block = 64, local = 1, global = 1, random = 3)

and PyTorch (1.13, Debian's OpenBLAS build) computing the same masked
attention densely (scores, mask, softmax, product), where its T x T
matrices fit in memory. Every configuration runs in its own process, so the
peak resident memory beyond the inputs is its own.

Reported per row: the best of several calls (other work on a shared
machine only ever adds time); the *ideal* speedup of a sparse layout over
kiln's dense causal kernel (dense key blocks / the layout's key blocks, as
`kiln inspect --attention-layout` counts them) beside the *achieved* one;
the block products' rate (2 x 64 x 64 x 64 flops per computed block and
product: Q K^T and P V forward, five products backward) against the
measured f32 GEMM peak (bench/sgemm_peak.cpp); and the extra memory.

PyTorch is run as an expert would: all cores, and without the
OPENBLAS_CORETYPE=Haswell / OPENBLAS_L2_SIZE settings of these machines,
which hold OpenBLAS to AVX2 kernels (unset for its process only; its results
are checked against kiln's). The section it writes goes between the
`<!-- sparse-attention -->` markers of docs/performance.md (bench/
performance.py keeps it when it rewrites the rest).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("KILN_BUILD_DIR", ROOT / "build"))
sys.path.insert(0, str(BUILD / "python"))
sys.path.insert(0, str(ROOT / "test" / "python"))
sys.path.insert(0, str(ROOT / "bench"))

from performance import (reset_peak_rss, status_bytes,  # noqa: E402
                         write_section)

H, D = 12, 64
LAYOUTS = {
    "dense": None,
    "window": dict(kind="sliding_window", window=512),
    "bigbird": dict(kind="block_sparse", block=64, local=1, random=3, seed=0,
                    **{"global": 1}),
}
MODEL = """
model attn(T = 4096, H = 12, D = 64) {
  param q: f32[1, T, H * D] = normal(1.0)
  param k: f32[1, T, H * D] = normal(1.0)
  param v: f32[1, T, H * D] = normal(1.0)
  fn forward() -> f32[1, T, H * D] {
    return attention(q, k, v, heads = H, causal = true PATTERN)
  }
  fn loss(g: f32[1, T, H * D]) -> f32 {
    return sum(forward() * g, axis = [0, 1, 2])
  }
}
"""
BEGIN, END = "<!-- sparse-attention -->", "<!-- /sparse-attention -->"


def spec_of(layout):
    s = dict(LAYOUTS[layout] or dict(kind="dense"))
    s["causal"] = True
    return s


def timed(f, repeat):
    """The best of `repeat` calls after a warm-up, in ms: on a shared
    machine other work only ever adds time, so the minimum is the most
    repeatable estimate of the code's own speed (and is taken for every
    system alike)."""
    f()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def child(system, layout, T, repeat, both):
    """One configuration in this process; prints a JSON line."""
    import sparse_reference as ref
    rng = np.random.default_rng(0)
    g = rng.standard_normal((1, T, H * D)).astype(np.float32)
    spec = spec_of(layout)
    result = {}
    if system == "kiln":
        import kiln
        pattern = "" if layout == "dense" else \
            ", pattern = " + ref.kiln_syntax(spec)
        m = kiln.compile(MODEL.replace("PATTERN", pattern),
                         defines={"T": T}, grad="loss" if both else None)
        lay = m.attention_layout(T)[0]
        result["blocks"] = sum(h["computed"] for h in lay["heads"]) * (
            H if len(lay["heads"]) == 1 else 1)
        reset_peak_rss()
        base = status_bytes("VmRSS")
        result["fwd"] = timed(lambda: m.forward(), repeat)
        if both:
            result["both"] = timed(lambda: m.run("loss_grad", g=g), repeat)
        result["extra"] = status_bytes("VmHWM") - base
        out = m.forward()
        result["checksum"] = float(np.abs(out).sum())
    else:
        import torch
        torch.set_num_threads(os.cpu_count())
        params = kiln_parameters(spec, T)
        p = {n: torch.from_numpy(a).requires_grad_() for n, a in
             params.items()}
        vis = torch.from_numpy(ref.visibility(spec, T, T, H))[None]
        gt = torch.from_numpy(g)

        def attend():
            q, k, v = (p[n].view(1, T, H, D).transpose(1, 2) for n in "qkv")
            s = (q @ k.transpose(-1, -2)) / np.sqrt(D)
            s = s.masked_fill(~vis, float("-inf"))
            return (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(
                1, T, H * D)

        def fwd():
            with torch.no_grad():
                return attend()

        def backward():
            for t in p.values():
                t.grad = None
            (attend() * gt).sum().backward()
        reset_peak_rss()
        base = status_bytes("VmRSS")
        result["fwd"] = timed(fwd, repeat)
        if both:
            result["both"] = timed(backward, repeat)
        result["extra"] = status_bytes("VmHWM") - base
        result["checksum"] = float(fwd().abs().sum())
    print(json.dumps(result))


def kiln_parameters(spec, T):
    """The weights kiln initializes (seed 0), so both sides compute the
    same attention and their outputs can be compared."""
    import kiln
    import sparse_reference as ref
    pattern = "" if spec["kind"] == "dense" else \
        ", pattern = " + ref.kiln_syntax(spec)
    m = kiln.compile(MODEL.replace("PATTERN", pattern), defines={"T": T})
    return m.parameters()


def run(system, layout, T, repeat, both):
    env = dict(os.environ)
    if system == "torch":
        # The peer at its best: OpenBLAS picks its own kernels.
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    else:
        # The runtime's profile gives each call's time in the attention
        # kernels themselves, apart from returning fresh output arrays.
        env["KILN_PROFILE"] = "1"
    r = subprocess.run([sys.executable, __file__, "--child",
                        f"{system},{layout},{T},{repeat},{int(both)}"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return dict(error=r.stderr.strip().splitlines()[-1:] or
                    [f"exit {r.returncode}"])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if system == "kiln":
        out.update(kernel_times(r.stderr))
    return out


def kernel_times(profile):
    """The best attention-kernel milliseconds per call of forward and
    loss_grad from KILN_PROFILE's report (the first call, a warm-up,
    left out)."""
    calls = {"forward": [], "loss_grad": []}
    current = None
    for line in profile.splitlines():
        if line.startswith("kiln profile: "):
            current = line.split(":")[1].strip()
            if current in calls:
                calls[current].append(0.0)
        elif current in calls and line.split()[:1] in (["Attention"],
                                                       ["AttentionGrad"]):
            calls[current][-1] += float(line.split()[1])
    res = {}
    for fn, key in (("forward", "kfwd"), ("loss_grad", "kboth")):
        timed = calls[fn][1:]
        if timed:
            res[key] = min(timed)
    return res


def torch_fits(T, both):
    """Whether PyTorch's dense T x T matrices fit: about 4 (forward) or 10
    (forward+backward) f32 score-sized tensors, against the machine's
    available memory with a margin."""
    need = (10 if both else 4) * H * T * T * 4
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return need < 0.7 * avail


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        system, layout, T, repeat, both = args.child.split(",")
        child(system, layout, int(T), int(repeat), both == "1")
        return
    import performance
    peak = performance.sgemm_peak()["peak_gflops"]
    print(f"sgemm peak: {peak:.0f} GFLOP/s", flush=True)
    sizes = (4096, 8192) if args.quick else (4096, 8192, 16384, 32768)
    rows = []
    for T in sizes:
        row = dict(T=T)
        for layout in LAYOUTS:
            # Sparse calls are short, so several; dense causal at 32k
            # takes half a minute a call.
            repeat = 9 if layout != "dense" else \
                {4096: 5, 8192: 3, 16384: 2}.get(T, 1)
            row[layout] = run("kiln", layout, T, repeat, True)
            print(f"T={T} kiln {layout}: {row[layout]}", flush=True)
        for layout in LAYOUTS:
            both = torch_fits(T, True)
            if torch_fits(T, False):
                row["torch_" + layout] = run("torch", layout, T, 1, both)
                print(f"T={T} torch {layout}: {row['torch_' + layout]}",
                      flush=True)
        rows.append(row)
    write(args.out, rows, peak, performance.machine())


def write(path, rows, peak, machine):
    lines = [BEGIN, "", "## Sparse attention, 12 heads x 64, B=1, causal",
             "",
             f"Generated by `bench/sparse_attention.py` on {machine['cpu']}, "
             f"{machine['cores']} cores; PyTorch {machine['torch']} with "
             "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for its process "
             "(its outputs match kiln's). window = `sliding_window(512)`, "
             "bigbird = `block_sparse(block = 64, local = 1, global = 1, "
             "random = 3, seed = 0)`. Times are the best of several calls "
             "after a warm-up (9 for the sparse layouts, 1 to 5 for dense "
             "causal and PyTorch): this machine is shared and its noise only "
             "ever adds time. kiln's times are the attention kernels' "
             "own (the runtime's profile, `KILN_PROFILE=1`), with the whole "
             "Python call in parentheses (which adds returning fresh output "
             "arrays: page faults and copies). *Ideal* = dense causal key "
             "blocks / the layout's key blocks; *achieved* = kiln dense "
             "kernel time / kiln sparse kernel time. *Of peak*: the forward "
             "block products' rate against the measured "
             f"f32 GEMM peak ({peak:.0f} GFLOP/s). Memory: peak RSS beyond "
             "the inputs (forward+backward).", "",
             "| T | layout | blocks | kiln fwd | kiln fwd+bwd | ideal | "
             "achieved fwd / fwd+bwd | fwd of peak | kiln memory | "
             "PyTorch fwd | PyTorch fwd+bwd | PyTorch memory | "
             "outputs agree |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        dense = row["dense"]
        for layout in LAYOUTS:
            r = row[layout]
            t = row.get("torch_" + layout, {})
            if "error" in r:
                lines.append(f"| {row['T']} | {layout} | failed: "
                             f"{r['error']} ||||||||||")
                continue
            flops_fwd = r["blocks"] * 2 * 2 * 64 * 64 * D
            rate = flops_fwd / r["kfwd"] / 1e6
            ideal = dense["blocks"] / r["blocks"]
            ach = (f"{dense['kfwd'] / r['kfwd']:.2f}x / "
                   f"{dense['kboth'] / r['kboth']:.2f}x")
            tf = f"{t['fwd']:,.0f} ms" if "fwd" in t else "does not fit"
            tb = f"{t['both']:,.0f} ms" if "both" in t else "does not fit"
            tm = f"{t['extra'] / 2**20:,.0f} MiB" if "extra" in t else "-"
            # Sum of |output| on the same weights: a cheap cross-check.
            agree = "-" if "checksum" not in t else (
                "yes" if abs(t["checksum"] - r["checksum"]) <=
                1e-4 * abs(t["checksum"]) else
                f"NO ({r['checksum']:.6g} vs {t['checksum']:.6g})")
            lines.append(
                f"| {row['T']:,} | {layout} | {r['blocks']:,} | "
                f"{r['kfwd']:,.0f} ms ({r['fwd']:,.0f}) | "
                f"{r['kboth']:,.0f} ms ({r['both']:,.0f}) | {ideal:.2f}x | "
                f"{ach} | {rate / peak:.0%} | "
                f"{r['extra'] / 2**20:,.0f} MiB | {tf} | {tb} | {tm} | "
                f"{agree} |")
    lines += ["", END]
    write_section(path, "\n".join(lines), BEGIN, END)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
