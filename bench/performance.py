"""kiln's CPU performance beside PyTorch 1.13 (Debian's, on OpenBLAS), in
the same run; writes docs/performance.md and docs/images/performance.png
(and the raw numbers, docs/images/performance.json).

    /usr/bin/python3 bench/performance.py [--quick] [--out docs/performance.md]

It builds what it needs (scripts/build.sh when build/ lacks the kiln
binary, the Python package or kiln-sgemm-peak) and measures:

- the machine's f32 GEMM peak: oneDNN matmul at 1024, 2048 and 4096 square
  (bench/sgemm_peak.cpp), the best of them;
- GPT-2 124M forward at B=1,T=128 and B=4,T=512 on the same weights and
  tokens (kiln run --repeat against the reference model of
  test/python/reference_models.py in float32; the outputs are compared);
- a GPT-2 124M training step (forward, backward, global-norm clipping,
  AdamW) at B=4,T=64 and B=4,T=128 (kiln train's step times against the
  same steps in PyTorch, each in its own process, with weights of the same
  shapes and scale and byte-level tokens);
- causal attention alone, 12 heads x 64, B=1, T = 1024 .. 8192, forward and
  forward+backward (kiln's fused kernel against PyTorch's
  matmul-softmax-matmul), with each process's extra peak memory.

Times are medians over repeated runs (the first run, which creates
primitives, is not counted). Useful FLOPs count the matrix products of the
model (6 x parameters in products x tokens for a training step, plus
attention's, halved for the causal mask); the fraction of peak divides
their rate by the measured GEMM peak. Dropout is off in both (the reference
has none). --quick runs fewer repeats and stops attention at T=2048, for a
smoke test of the script itself.
"""
import argparse
import json
import os
import platform
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
BUILD = ROOT / "build"
KILN = BUILD / "bin" / "kiln"
PEAK = BUILD / "bin" / "kiln-sgemm-peak"
DATA = Path(os.environ.get("KILN_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "test" / "python"))
sys.path.insert(0, str(BUILD / "python"))

def data_file(name):
    """A data set (docs/data.md); exits naming it when it is absent."""
    path = DATA / name
    if not path.is_file():
        sys.exit(f"bench: {path} is missing: the data sets are read from "
                 f"../shared/data beside the checkout, or from $KILN_DATA "
                 f"(see docs/data.md)")
    return path


CFG = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12,
           n_head=12)
NO_DROPOUT = ["-D", "resid_pdrop=0", "-D", "embd_pdrop=0"]
# Parameters that take part in matrix products: 12 blocks of
# c_attn + c_proj + c_fc + mlp.c_proj, and the tied output projection.
MATMUL_PARAMS = 12 * (768 * 2304 + 768 * 768 + 2 * 768 * 3072) + 50257 * 768


def forward_flops(B, T):
    # Causal attention: QK^T and PV over half the T x T scores, per layer.
    return 2 * MATMUL_PARAMS * B * T + 12 * 2 * B * T * T * 768


def ensure_built():
    if not (KILN.exists() and PEAK.exists() and
            (BUILD / "python" / "kiln").exists()):
        subprocess.run([ROOT / "scripts" / "build.sh"], check=True)


def machine():
    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                                   check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import torch
    return dict(cpu=model, cores=os.cpu_count(), memory_gib=mem / 2 ** 30,
                torch=torch.__version__, python=platform.python_version())


def sgemm_peak():
    out = subprocess.run([PEAK], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def peak_rss_of(cmd, **kwargs):
    """Runs `cmd` from a fresh Python process, so RUSAGE_CHILDREN's maximum
    is this command's own peak RSS."""
    r = subprocess.run([sys.executable, __file__, "--peak-rss", "--",
                        *map(str, cmd)], capture_output=True, text=True,
                       **kwargs)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{r.stderr[-2000:]}")
    return int(r.stdout.strip().splitlines()[-1])


#===------------------------------------------------------------------------===#
# GPT-2 forward
#===------------------------------------------------------------------------===#

def torch_forward(w, tokens, repeat):
    import torch
    import reference_models as ref
    t32 = {k: torch.from_numpy(v) for k, v in w.items()}
    ref.t = lambda ws, name: t32[name]
    with torch.no_grad():
        ref.gpt2(w, dict(n_embd=768, n_head=12, n_layer=12), tokens)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = ref.gpt2(w, dict(n_embd=768, n_head=12, n_layer=12), tokens)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out.numpy()


def arena_of(art, fn, dims):
    text = subprocess.run([KILN, "inspect", art, f"--dims={dims}"],
                          capture_output=True, text=True, check=True).stdout
    m = re.search(rf"fn {fn}\(.*?arena (\d+) bytes; all intermediates "
                  r"without reuse (\d+) bytes", text, re.S)
    return int(m.group(1)), int(m.group(2))


def gpt2_forward(d, w, B, T, repeat, threads):
    from kiln_cli import write_safetensors
    weights = d / "gpt2.safetensors"
    if not weights.exists():
        write_safetensors(weights, w)
    arts = {}
    for name, extra in (("fused", []), ("unfused", ["--no-fuse"])):
        arts[name] = d / f"gpt2-{name}.kart"
        if not arts[name].exists():
            subprocess.run([KILN, "compile", ROOT / "examples" / "gpt2.kiln",
                            *NO_DROPOUT, *extra, f"--weights={weights}", "-o",
                            arts[name]], check=True)
    tokens = np.random.default_rng(0).integers(0, 50257, (B, T)).astype(
        np.int32)
    np.save(d / "tokens.npy", tokens)
    r = subprocess.run([KILN, "run", arts["fused"],
                        f"--input=tokens=@{d / 'tokens.npy'}",
                        f"--output=@{d / 'out.npy'}", f"--repeat={repeat}",
                        f"--threads={threads}"], capture_output=True,
                       text=True, check=True)
    kiln_ms = float(re.search(r"median ([0-9.]+) ms", r.stderr).group(1))
    torch_ms, want = torch_forward(w, tokens, repeat)
    diff = float(np.max(np.abs(np.load(d / "out.npy") - want)))
    dims = f"B={B},T={T}"
    return dict(B=B, T=T, kiln_ms=kiln_ms, torch_ms=torch_ms, max_diff=diff,
                arena=arena_of(arts["fused"], "forward", dims)[0],
                arena_unfused=arena_of(arts["unfused"], "forward", dims)[0],
                flops=forward_flops(B, T))


#===------------------------------------------------------------------------===#
# GPT-2 training step
#===------------------------------------------------------------------------===#

def torch_train_child(B, T, steps, threads):
    import torch
    import torch.nn.functional as F
    import reference_models as ref
    torch.set_num_threads(threads)
    from test_default_sizes import weights
    g = torch.Generator().manual_seed(0)
    w = {k: torch.from_numpy(v.copy()).requires_grad_()
         for k, v in weights("gpt2.kiln", 1).items()}
    ref.t = lambda ws, name: ws[name]
    opt = torch.optim.AdamW(list(w.values()), lr=1e-4, weight_decay=0.0)
    times = []
    for _ in range(steps):
        x = torch.randint(0, 256, (B, T), generator=g)
        y = torch.randint(0, 256, (B, T), generator=g)
        t0 = time.perf_counter()
        opt.zero_grad()
        logits = ref.gpt2(w, CFG, x)
        F.cross_entropy(logits.reshape(-1, 50257), y.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(list(w.values()), 1.0)
        opt.step()
        times.append((time.perf_counter() - t0) * 1e3)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"ms": times, "rss": rss}))


def gpt2_train(d, B, T, steps, threads):
    art = d / "train.kart"
    subprocess.run([KILN, "compile", ROOT / "examples" / "gpt2.kiln",
                    *NO_DROPOUT, "--grad=loss",
                    f"--external-weights={d / 'train.safetensors'}", "-o",
                    art], check=True)
    arena = arena_of(art, "loss_grad", f"B={B},T={T}")
    art_u = d / "train-unfused.kart"
    subprocess.run([KILN, "compile", ROOT / "examples" / "gpt2.kiln",
                    *NO_DROPOUT, "--grad=loss", "--no-fuse",
                    f"--external-weights={d / 'train-u.safetensors'}", "-o",
                    art_u], check=True)
    arena_u = arena_of(art_u, "loss_grad", f"B={B},T={T}")
    kiln_rss = peak_rss_of([KILN, "train", ROOT / "examples" / "gpt2.kiln",
                    f"--data={data_file('tinyshakespeare.txt')}",
                    "--tokenizer=byte", "-D", "vocab_size=50257", *NO_DROPOUT,
                    f"--steps={steps}", f"--batch={B}", f"--seq={T}",
                    "--lr=1e-4", "--eval-fraction=0", f"--threads={threads}",
                    f"--metrics={d / 'm.jsonl'}", "-o", d / "trained.kart"])
    rows = [json.loads(line) for line in
            (d / "m.jsonl").read_text().splitlines()]
    kiln_ms = statistics.median(r["step_ms"] for r in rows[1:])
    child = subprocess.run([sys.executable, __file__, "--torch-train",
                            f"{B},{T},{steps},{threads}"],
                           capture_output=True, text=True, check=True)
    t = json.loads(child.stdout.strip().splitlines()[-1])
    return dict(B=B, T=T, kiln_ms=kiln_ms,
                torch_ms=statistics.median(t["ms"][1:]),
                kiln_rss=kiln_rss, torch_rss=t["rss"], arena=arena[0],
                arena_unfused=arena_u[0], flops=3 * forward_flops(B, T))


#===------------------------------------------------------------------------===#
# Attention alone
#===------------------------------------------------------------------------===#

ATTENTION = """
model attn(T = 1024) {
  param q: f32[1, T, 768] = normal(1.0)
  param k: f32[1, T, 768] = normal(1.0)
  param v: f32[1, T, 768] = normal(1.0)
  fn forward(g: f32[1, T, 768]) -> f32[1, T, 768] {
    return attention(q, k, v, heads = 12, causal = true)
  }
  fn loss(g: f32[1, T, 768]) -> f32 {
    return sum(forward(g) * g, axis = [0, 1, 2])
  }
}
"""


def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss():
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def attention_child(system, T, repeat):
    """Times forward and forward+backward; extra memory is the peak RSS
    beyond what the inputs and model already hold."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal((1, T, 768)).astype(np.float32)
    if system == "kiln":
        import kiln
        m = kiln.compile(ATTENTION, defines={"T": T}, grad="loss")
        fwd = lambda: m.forward(g=g)  # noqa: E731
        both = lambda: m.run("loss_grad", g=g)  # noqa: E731
    else:
        import torch
        torch.set_num_threads(os.cpu_count())
        p = {n: torch.from_numpy(rng.standard_normal((1, T, 768)).astype(
            np.float32)).requires_grad_() for n in "qkv"}
        gt = torch.from_numpy(g)
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)

        def attend():
            q, k, v = (p[n].view(1, T, 12, 64).transpose(1, 2) for n in "qkv")
            s = (q @ k.transpose(-1, -2)) / 8.0
            s = s.masked_fill(causal, float("-inf"))
            return (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(
                1, T, 768)

        def fwd():
            with torch.no_grad():
                return attend()

        def both():
            for t in p.values():
                t.grad = None
            (attend() * gt).sum().backward()
    reset_peak_rss()
    base = status_bytes("VmRSS")
    result = {}
    for name, f in (("fwd", fwd), ("both", both)):
        f()  # warm-up: primitives, first touch
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            f()
            times.append((time.perf_counter() - t0) * 1e3)
        result[name] = statistics.median(times)
    result["extra"] = status_bytes("VmHWM") - base
    print(json.dumps(result))


def attention(T, repeat):
    out = {}
    for system in ("kiln", "torch"):
        r = subprocess.run([sys.executable, __file__, "--attention",
                            f"{system},{T},{repeat}"], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{system} attention at T={T} failed:\n"
                               f"{r.stderr[-2000:]}")
        out[system] = json.loads(r.stdout.strip().splitlines()[-1])
    return dict(T=T, kiln=out["kiln"], torch=out["torch"],
                flops_fwd=12 * 2 * T * T * 64 * 2 / 2)


#===------------------------------------------------------------------------===#
# Report
#===------------------------------------------------------------------------===#

def mib(b):
    return f"{b / 2 ** 20:,.0f} MiB"


def speed_cells(r, peak, digits):
    """Shape, both times, the speedup, kiln's useful GFLOP/s and its
    fraction of the GEMM peak, as the first cells of a table row."""
    rate = r["flops"] / r["kiln_ms"] / 1e6
    return (f"| B={r['B']}, T={r['T']} | {r['kiln_ms']:.{digits}f} ms | "
            f"{r['torch_ms']:.{digits}f} ms | "
            f"**{r['torch_ms'] / r['kiln_ms']:.2f}x** | {rate:.0f} | "
            f"**{rate / peak:.0%}** |")


def write_report(out, res):
    peak = res["peak"]["peak_gflops"]
    m = res["machine"]
    L = []
    L.append("# Performance\n")
    L.append("Generated by `bench/performance.py` (do not edit by hand); "
             "kiln and PyTorch run in the same invocation on the same "
             "machine (the forward passes on the same weights and tokens). "
             "Ratios are PyTorch time / kiln "
             "time (higher is better for kiln). Times are medians; see the "
             "script's docstring for what each row measures.\n")
    L.append(f"**Machine:** {m['cpu']}, {m['cores']} cores, "
             f"{m['memory_gib']:.0f} GiB; PyTorch {m['torch']} (Debian, "
             f"OpenBLAS), Python {m['python']}; run on {res['date']}.\n")
    sizes = ", ".join(f"{s['n']}: {s['gflops']:.0f}"
                      for s in res["peak"]["sizes"])
    L.append(f"**Measured f32 GEMM peak** (oneDNN matmul, square sizes, "
             f"GFLOP/s): {sizes}; peak **{peak:.0f} GFLOP/s**.\n")
    L.append("## GPT-2 124M forward\n")
    L.append("| shape | kiln | PyTorch | speedup | kiln GFLOP/s | of peak "
             "| arena fused / unfused | max abs diff |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in res["forward"]:
        L.append(speed_cells(r, peak, 1) + f" {mib(r['arena'])} / "
                 f"{mib(r['arena_unfused'])} | {r['max_diff']:.1e} |")
    L.append("")
    L.append("## GPT-2 124M training step (forward, backward, clipping, "
             "AdamW)\n")
    L.append("| shape | kiln | PyTorch | speedup | kiln useful GFLOP/s | "
             "of peak | loss_grad arena fused / unfused | peak RSS kiln / "
             "PyTorch |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in res["train"]:
        L.append(speed_cells(r, peak, 0) + f" {mib(r['arena'])} / "
                 f"{mib(r['arena_unfused'])} | {mib(r['kiln_rss'])} / "
                 f"{mib(r['torch_rss'])} |")
    L.append("")
    L.append("The loss_grad arena includes the gradients it returns "
             "(124M parameters, 475 MiB).\n")
    L.append("## Causal attention, 12 heads x 64, B=1\n")
    L.append("| T | kiln fwd | PyTorch fwd | speedup | kiln fwd+bwd | "
             "PyTorch fwd+bwd | speedup | extra memory kiln / PyTorch |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in res["attention"]:
        k, t = r["kiln"], r["torch"]
        L.append(f"| {r['T']} | {k['fwd']:.0f} ms | {t['fwd']:.0f} ms | "
                 f"**{t['fwd'] / k['fwd']:.1f}x** | {k['both']:.0f} ms | "
                 f"{t['both']:.0f} ms | **{t['both'] / k['both']:.1f}x** | "
                 f"{mib(k['extra'])} / {mib(t['extra'])} |")
    L.append("")
    L.append("kiln's attention never stores the T x T scores: its extra "
             "memory is the outputs and gradients (linear in T), where "
             "PyTorch's grows with T^2.\n")
    L.append("![speedups](images/performance.png)\n")
    # bench/sparse_attention.py's and bench/quantization.py's sections are
    # their own: kept as they were.
    old = out.read_text() if out.exists() else ""
    for mark in ("sparse-attention", "quantization"):
        begin, end = f"<!-- {mark} -->", f"<!-- /{mark} -->"
        if begin in old and end in old:
            L.append(old[old.index(begin):old.index(end) + len(end)] + "\n")
    out.write_text("\n".join(L))


def write_section(path, section, begin, end):
    """Puts `section` (which starts with `begin` and ends with `end`) in the
    file at `path`, replacing the text between those markers, or appended
    when the file has none: how bench/sparse_attention.py and
    bench/quantization.py keep their sections of docs/performance.md."""
    p = Path(path)
    text = p.read_text() if p.exists() else ""
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + \
            text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    p.write_text(text)


def plot(path, res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    labels, ratios = [], []
    for r in res["forward"]:
        labels.append(f"fwd\nB={r['B']},T={r['T']}")
        ratios.append(r["torch_ms"] / r["kiln_ms"])
    for r in res["train"]:
        labels.append(f"train\nB={r['B']},T={r['T']}")
        ratios.append(r["torch_ms"] / r["kiln_ms"])
    a.bar(labels, ratios, color="#c0392b")
    a.axhline(1, color="black", linewidth=0.8)
    a.set_ylabel("speedup over PyTorch (x)")
    a.set_title("GPT-2 124M")
    for i, v in enumerate(ratios):
        a.text(i, v, f"{v:.1f}x", ha="center", va="bottom")
    Ts = [r["T"] for r in res["attention"]]
    b.plot(Ts, [r["torch"]["fwd"] / r["kiln"]["fwd"]
                for r in res["attention"]], "o-", label="forward")
    b.plot(Ts, [r["torch"]["both"] / r["kiln"]["both"]
                for r in res["attention"]], "s-", label="forward+backward")
    b.set_xscale("log", base=2)
    b.set_xlabel("sequence length T")
    b.set_ylabel("speedup over PyTorch (x)")
    b.set_title("causal attention, 12 heads x 64")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" /
                    "performance.md")
    ap.add_argument("--torch-train", help=argparse.SUPPRESS)
    ap.add_argument("--attention", help=argparse.SUPPRESS)
    ap.add_argument("--peak-rss", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_rss:
        subprocess.run(args.command, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
        return
    if args.torch_train:
        torch_train_child(*map(int, args.torch_train.split(",")))
        return
    if args.attention:
        system, T, repeat = args.attention.split(",")
        attention_child(system, int(T), int(repeat))
        return
    data_file("tinyshakespeare.txt")  # before minutes of measurements
    ensure_built()
    import torch
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    from test_default_sizes import weights
    res = dict(machine=machine(), date=time.strftime("%Y-%m-%d"))
    res["peak"] = sgemm_peak()
    print(f"sgemm peak: {res['peak']['peak_gflops']:.0f} GFLOP/s", flush=True)
    repeat = 3 if args.quick else 10
    # The raw numbers are written after every measurement, so a failure
    # later (or in the plot) never loses what was measured.
    raw = args.out.parent / "images" / "performance.json"
    raw.parent.mkdir(parents=True, exist_ok=True)

    def save():
        raw.write_text(json.dumps(res, indent=1))
    w = weights("gpt2.kiln", 1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        res["forward"] = []
        for B, T in ((1, 128), (4, 512)):
            r = gpt2_forward(d, w, B, T, repeat, threads)
            print(f"forward B={B} T={T}: kiln {r['kiln_ms']:.1f} ms, "
                  f"PyTorch {r['torch_ms']:.1f} ms", flush=True)
            res["forward"].append(r)
            save()
        res["train"] = []
        for B, T in ((4, 64), (4, 128)):
            r = gpt2_train(d, B, T, 4 if args.quick else 8, threads)
            print(f"train B={B} T={T}: kiln {r['kiln_ms']:.0f} ms, "
                  f"PyTorch {r['torch_ms']:.0f} ms", flush=True)
            res["train"].append(r)
            save()
    res["attention"] = []
    for T in (1024, 2048) if args.quick else (1024, 2048, 4096, 8192):
        r = attention(T, 2 if args.quick or T >= 4096 else 3)
        print(f"attention T={T}: kiln {r['kiln']['fwd']:.0f}/"
              f"{r['kiln']['both']:.0f} ms, PyTorch {r['torch']['fwd']:.0f}/"
              f"{r['torch']['both']:.0f} ms", flush=True)
        res["attention"].append(r)
        save()
    image = args.out.parent / "images" / "performance.png"
    write_report(args.out, res)
    print(f"wrote {args.out} and {raw}", flush=True)
    plot(image, res)
    print(f"wrote {image}")


if __name__ == "__main__":
    main()
