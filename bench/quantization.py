#!/usr/bin/python3
"""Quantized weights: speed, size and accuracy against f32, in one run.

    /usr/bin/python3 bench/quantization.py [--out docs/performance.md]

Measures, for f32 and each format (int8, int4:group=32, nf4):

- decoding matmuls: one token (B=1) through 12 pairs of linear layers of
  GPT-2's MLP shapes (768 -> 3072 -> 768), 226 MB of f32 weights, so
  every weight comes from memory as it does when a model decodes; the
  time per matmul, the weight bytes it reads per second, and the
  machine's memory bandwidth (a NumPy copy of 512 MiB) as the limit;
- GPT-2 124M forward at B=1, T=128 (the best of several calls), with the
  default selection and with the tied embedding quantized too;
- the stored size of GPT-2 124M (`--emit=params`: codes and scales);
- accuracy: the held-out loss of the demo's Shakespeare model (scripts/
  demo.sh trains it into build/demo/shakespeare) on every 64-token window
  of the last 10% of tinyshakespeare, with its linear layers quantized; and
  stories260K's loss on its own greedy stories.

kiln's threads: all cores. The section goes between the
`<!-- quantization -->` markers of docs/performance.md (bench/
performance.py keeps it when it rewrites the rest).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("KILN_BUILD_DIR", ROOT / "build"))
sys.path.insert(0, str(BUILD / "python"))
sys.path.insert(0, str(ROOT / "bench"))

import kiln  # noqa: E402
from performance import data_file, machine, write_section  # noqa: E402

SPECS = [None, "int8", "int4:group=32", "nf4"]
BEGIN, END = "<!-- quantization -->", "<!-- /quantization -->"
CHAIN = """
model chain(L = 12) {
  dim B
  block h[L] {
    param up = linear(768, 3072)
    param down = linear(3072, 768)
    fn apply(x: f32[B, 768]) -> f32[B, 768] { return down(up(x)) }
  }
  fn forward(x: f32[B, 768]) -> f32[B, 768] { return h.apply(x) }
}
"""
GPT2 = ROOT / "examples" / "gpt2.kiln"
TRAINED = BUILD / "demo" / "shakespeare" / "gpt2-trained.kart"


def best(f, repeat):
    f()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def name(spec):
    return spec or "f32"


def bandwidth():
    """GB/s of a 512 MiB copy (bytes read plus bytes written), one NumPy
    copy of a share per core at once (NumPy releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor
    a = np.ones(1 << 27, np.float32)
    b = np.empty_like(a)
    cores = os.cpu_count()
    parts = np.array_split(np.arange(a.size), cores)
    bounds = [(p[0], p[-1] + 1) for p in parts]
    with ThreadPoolExecutor(cores) as pool:
        def copy():
            list(pool.map(lambda r: np.copyto(b[r[0]:r[1]], a[r[0]:r[1]]),
                          bounds))
        t = best(copy, 5)
    return 2 * a.nbytes / t / 1e9


def decode():
    x = np.random.default_rng(0).standard_normal((1, 768)).astype(np.float32)
    out, ref = {}, None
    for spec in SPECS:
        m = kiln.compile(CHAIN, quantize=spec)
        y = m.forward(x=x)
        if ref is None:
            ref = y
        t = best(lambda: m.forward(x=x), 30) / 24  # per matmul
        size = stored_bytes(CHAIN, spec) / 24
        out[name(spec)] = dict(us=t * 1e6, gbs=size / t / 1e9,
                               rel=float(np.abs(y - ref).max() /
                                         np.abs(ref).max()))
    return out


def stored_bytes(source, spec, defines=None, params=None):
    """The parameters' stored bytes, from --emit=params' total line."""
    with tempfile.NamedTemporaryFile("w", suffix=".kiln") as f:
        if isinstance(source, Path):
            path = str(source)
        else:
            f.write(source)
            f.flush()
            path = f.name
        args = [str(BUILD / "bin" / "kiln"), "compile", path, "--emit=params"]
        for k, v in (defines or {}).items():
            args += ["-D", f"{k}={v}"]
        if spec:
            args.append(f"--quantize={spec}")
        if params:
            args.append("--quantize-params=" + ",".join(params))
        text = subprocess.run(args, capture_output=True, text=True,
                              check=True).stdout
    total = text.strip().splitlines()[-1]
    return int(re.search(r"([\d,]+) bytes stored", total).group(1)
               .replace(",", ""))


def gpt2_forward():
    """f32 and each format with the default selection (linear layers), then
    int8 and NF4 with the tied embedding / output projection too."""
    tokens = np.random.default_rng(1).integers(0, 50257, (1, 128)).astype(
        np.int32)
    out, ref = {}, None
    runs = [(spec, None) for spec in SPECS] + [
        ("int8", ["*.weight"]), ("nf4", ["*.weight"])]
    for spec, params in runs:
        m = kiln.compile(GPT2, quantize=spec, quantize_params=params)
        y = m.forward(tokens=tokens)
        if ref is None:
            ref = y
        key = name(spec) + (" + tied wte" if params else "")
        out[key] = dict(
            ms=best(lambda: m.forward(tokens=tokens), 7) * 1e3,
            bytes=stored_bytes(GPT2, spec, params=params),
            rel=float(np.abs(y - ref).max() / np.abs(ref).max()))
    return out


def stories_accuracy(prompts=8, tokens=192):
    """stories260K (llama2.c's checkpoint through examples/llama.kiln) on
    its own greedy stories: from BOS and each of `prompts` first tokens, f32
    greedy decoding writes `tokens` tokens; the loss of every model on
    predicting them."""
    ckpt = data_file("stories260K.bin")
    llama = ROOT / "examples" / "llama.kiln"
    f32 = kiln.compile(llama, weights=ckpt)
    starts = np.random.default_rng(2).integers(3, 512, prompts)
    texts = [np.asarray(f32.generate(prompt_ids=[1, int(s)],
                                     max_tokens=tokens, temperature=0),
                        np.int32) for s in starts]
    out = {}
    for spec in SPECS:
        m = kiln.compile(llama, weights=ckpt, quantize=spec)
        losses = [float(m.loss(tokens=t[None, :-1], targets=t[None, 1:]))
                  for t in texts]
        out[name(spec)] = sum(losses) / len(losses)
    return out


def accuracy():
    if not TRAINED.is_file():
        return None
    trained = kiln.load(TRAINED)
    hp = trained.hyperparameters()
    defines = {k: int(hp[k]) for k in ("n_layer", "n_embd", "n_head",
                                       "n_positions", "vocab_size")}
    text = data_file("tinyshakespeare.txt").read_text()
    ids = np.array(trained.tokenizer.encode(text), np.int32)
    held = ids[int(len(ids) * 0.9):]
    T = 64
    n = (len(held) - 1) // T
    x = held[:n * T].reshape(n, T)
    y = held[1:n * T + 1].reshape(n, T)
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp) / "w.safetensors"
        trained.save_weights(w)
        out = {}
        for spec in SPECS:
            m = kiln.compile(GPT2, defines=defines, weights=w, quantize=spec)
            losses = [float(m.loss(tokens=x[i:i + 64], targets=y[i:i + 64]))
                      * len(x[i:i + 64]) for i in range(0, n, 64)]
            out[name(spec)] = sum(losses) / n
    return out


def write(path, res):
    mach = res["machine"]
    L = [BEGIN, "", "## Quantized weights", "",
         f"Generated by `bench/quantization.py` on {mach['cpu']}, "
         f"{mach['cores']} cores. Memory bandwidth (a 512 MiB copy on every "
         f"core, bytes read and written): {res['bandwidth']:.1f} GB/s — the "
         "limit for decoding, which reads every weight once per token (a "
         "read-only stream runs somewhat faster than a copy).", "",
         "**Decoding matmuls** (one token through 12 pairs of 768 x 3072 "
         "linear layers, 226 MB of f32 weights, so weights come from "
         "memory; time per matmul, the best of 30 calls):", "",
         "| weights | per matmul | weight bytes read | vs f32 | "
         "rel. diff after 24 layers |",
         "|---|---|---|---|---|"]
    f32 = res["decode"]["f32"]["us"]
    for k, r in res["decode"].items():
        L.append(f"| {k} | {r['us']:.0f} us | {r['gbs']:.1f} GB/s | "
                 f"{f32 / r['us']:.2f}x | {r['rel']:.1e} |")
    L += ["", "**GPT-2 124M** (forward at B=1, T=128, the best of 7 calls; "
          "stored size of the parameters; logits' largest difference from "
          "f32 relative to the largest logit, random weights):", "",
          "| weights | forward | vs f32 | stored | smaller by | logits rel. diff |",
          "|---|---|---|---|---|---|"]
    g = res["gpt2"]
    for k, r in g.items():
        L.append(f"| {k} | {r['ms']:.0f} ms | {g['f32']['ms'] / r['ms']:.2f}x "
                 f"| {r['bytes'] / 2**20:.1f} MiB | "
                 f"{g['f32']['bytes'] / r['bytes']:.2f}x | {r['rel']:.1e} |")
    L.append("")
    L.append("By default the tied 50257 x 768 embedding (147 MiB) stays f32, "
             "so the whole model shrinks less than its linear layers and the "
             "f32 output projection (10 of the forward's 32 GFLOP) bounds "
             "the speed-up; `--quantize-params='*.weight'` quantizes it too "
             "(\"+ tied wte\": the embedding dequantizes the rows it "
             "gathers, the output projection runs the quantized matmul). "
             "int8 quantizes each token's activations to int8 (absmax / "
             "127) and multiplies s8 x s8 in oneDNN (VNNI on this CPU).")
    if res["accuracy"]:
        a = res["accuracy"]
        L += ["", "**Accuracy**: the demo's Shakespeare model (scripts/"
              "demo.sh), held-out loss on every 64-token window of the last "
              "10% of tinyshakespeare, its linear layers quantized:", "",
              "| weights | held-out loss | vs f32 |", "|---|---|---|"]
        for k, v in a.items():
            L.append(f"| {k} | {v:.4f} | {100 * (v / a['f32'] - 1):+.2f}% |")
    if res.get("stories"):
        a = res["stories"]
        L += ["", "stories260K (llama2.c's checkpoint, examples/llama.kiln), "
              "the loss on its own greedy stories (f32 greedy decoding of "
              "192 tokens from BOS and 8 random first tokens), every linear "
              "layer quantized:", "",
              "| weights | loss | vs f32 |", "|---|---|---|"]
        for k, v in a.items():
            L.append(f"| {k} | {v:.4f} | {100 * (v / a['f32'] - 1):+.2f}% |")
    L += ["", END]
    write_section(path, "\n".join(L), BEGIN, END)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = ap.parse_args()
    res = dict(machine=machine())
    res["bandwidth"] = bandwidth()
    print(f"bandwidth {res['bandwidth']:.1f} GB/s", flush=True)
    res["decode"] = decode()
    print("decode", res["decode"], flush=True)
    res["accuracy"] = accuracy()
    print("accuracy", res["accuracy"], flush=True)
    res["stories"] = stories_accuracy()
    print("stories", res["stories"], flush=True)
    res["gpt2"] = gpt2_forward()
    print("gpt2", res["gpt2"], flush=True)
    write(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
